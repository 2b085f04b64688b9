"""Language-aware keyword search through the real Elasticsearch: English stems and stop words,
Chinese words, `none` as before, collections of several languages searched together, the
highlights on the page and in the API, and rebuild_index's language argument.

The analysis itself and `import_corpus --language`, without services: tests/unit/test_analysis.py
and tests/unit/test_languages.py. A rebuild after a language change with searches served
throughout: tests/integration/test_language_rebuild.py.
"""
from __future__ import annotations

import re

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from indexer.store import alias_name
from indexer.models import Collection, IndexBuild
from tests.support.searching import add_documents, build_reranker, drop_collections, index_now, search_settings

pytestmark = pytest.mark.django_db

ENGLISH = [
    ("horses", "Field notes", "Veterinarians studied running horses on a farm for a year.", {}),
    ("cattle", "Field notes", "The cattle were kept in a barn and fed hay twice a day.", {}),
    ("sprint", "Athletics", "A sprint is a short race; the runner is timed to the hundredth of a second.", {}),
    ("ponies", "The ponies' stable", "Ponies and donkeys graze in the meadow of the valley.", {}),
    ("stops", "Of the and a", "It is the one that was there, and it is not a thing of this or that.", {}),
]

# Short Chinese documents written for these tests: 医学 (medicine) as a word in three, its two
# characters in many others (医生学习: a doctor learning; 学医: to study medicine).
CHINESE = [
    "我们研究医学和生物学",
    "医生学习新的手术技术",
    "医学院的学生在图书馆学习解剖学",
    "中医药在慢性病治疗中的作用",
    "生物学家在热带雨林发现了新的昆虫",
    "这家医院引进了先进的影像设备",
    "护士学习如何照顾老年病人",
    "基因编辑技术改变了农业育种",
    "疫苗可以预防多种传染病",
    "学校开设了新的计算机课程",
    "经济学家预测明年的增长速度",
    "气候变化影响了北方的降雨",
    "城市交通在早晚高峰非常拥堵",
    "研究人员分析了蛋白质的结构",
    "医疗保险覆盖了更多的农村居民",
    "学生们在实验室观察细胞分裂",
    "运动员每天训练四个小时",
    "数学老师讲解了微积分的基本概念",
    "化学反应释放了大量的热量",
    "心脏病患者需要定期检查血压",
    "图书馆收藏了许多古代文献",
    "人工智能帮助医生诊断疾病",
    "科学家用显微镜研究细菌",
    "历史学家研究古代丝绸之路",
    "营养学建议每天吃蔬菜和水果",
    "环境保护需要每个人参与",
    "新药的临床试验取得了成功",
    "农民在春天播种小麦",
    "工程师设计了一座新的桥梁",
    "儿童医学中心开放了新的病房",
    "医药公司投资研发抗癌药物",
    "学医的人需要耐心和细心",
]
MEDICINE = {"zh00", "zh02", "zh29"}  # the documents with the word 医学
DOCTOR_LEARNING = "zh01"  # 医生学习新的手术技术


def chinese_docs():
    return [(f"zh{i:02d}", "", text, {}) for i, text in enumerate(CHINESE)]


@pytest.fixture(scope="module")
def corpus(es, django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        public = Collection.Visibility.PUBLIC  # searched anonymously
        en = Collection.objects.create(name="Lang en", slug="l-en", visibility=public)  # en: the default of a new collection
        plain = Collection.objects.create(name="Lang none", slug="l-none", language="none", visibility=public)
        zh = Collection.objects.create(name="Lang zh", slug="l-zh", language="zh", visibility=public)
        zh_plain = Collection.objects.create(name="Lang zh none", slug="l-zh-none", language="none", visibility=public)
        add_documents(en, ENGLISH)
        add_documents(plain, ENGLISH)
        add_documents(zh, chinese_docs())
        add_documents(zh_plain, chinese_docs())
        index_now(es, en, plain, zh, zh_plain)
        yield {"en": en, "none": plain, "zh": zh, "zh-none": zh_plain}
        drop_collections(es, en, plain, zh, zh_plain)


@pytest.fixture
def api(client, settings, corpus, rerank_worker):
    search_settings(settings, build_reranker())

    def get(path="/api/search", **params):
        response = client.get(path, {"rerank": "off", "k": 50, **params})
        assert response.status_code == 200, response.content
        return response.json() if path == "/api/search" else response.content.decode()

    return get


def found(body) -> list[str]:
    return [r["external_id"] for r in body["results"]]


def marks(html: str) -> list[str]:
    return re.findall(r"<mark>(.*?)</mark>", html)


def test_new_collections_are_english_and_indices_record_their_language(corpus, es):
    assert Collection._meta.get_field("language").default == "en" and corpus["en"].language == "en"
    for key, language in (("en", "en"), ("none", "none"), ("zh", "zh")):
        build = IndexBuild.objects.get(collection=corpus[key], status=IndexBuild.Status.LIVE)
        assert build.language == language
        mapping = es.indices.get_mapping(index=alias_name(corpus[key].slug))[build.index_name]["mappings"]
        assert mapping["_meta"]["language"] == language
        assert ("text_terms" in mapping["properties"]) == (language != "none")


def test_study_run_horse_finds_studied_running_horses(api):
    body = api(q="study run horse", mode="keyword", collection="l-en")
    assert found(body)[0] == "horses"
    assert marks(body["results"][0]["snippet_html"]) == ["studied", "running", "horses"]
    # The standard analyzer (language none) has no stemming: no keyword match at all.
    assert found(api(q="study run horse", mode="keyword", collection="l-none")) == []


@pytest.mark.parametrize("mode", ["keyword", "semantic", "hybrid"])
def test_highlights_never_mark_stop_words(api, mode):
    query = "the horses of a farm and the running of the ponies"
    body = api(q=query, mode=mode, collection="l-en")
    assert body["results"]
    stops = {"the", "of", "a", "and", "is", "it", "this", "that", "was", "there", "not", "or"}
    marked = [word for r in body["results"] for word in marks(r["snippet_html"]) + marks(r["title_html"])]
    assert marked and not {w.lower() for w in marked} & stops
    assert {"horses", "farm", "running", "ponies", "Ponies"} & set(marked)
    # The page shows the same marks.
    page = api("/", q=query, mode=mode, collection="l-en")
    assert "<mark>the</mark>" not in page.lower() and "<mark>of</mark>" not in page.lower()
    assert "<mark>running</mark>" in page or "<mark>ponies</mark>" in page.lower()


def test_a_query_of_stop_words_matches_nothing_in_english(api):
    assert found(api(q="of the and a", mode="keyword", collection="l-en")) == []
    # Under `none` the same words are ordinary terms, as before languages existed.
    assert "stops" in found(api(q="of the and a", mode="keyword", collection="l-none"))
    # Hybrid still answers with the semantic list.
    assert found(api(q="of the and a", mode="hybrid", collection="l-en"))


def test_chinese_words_not_characters(api):
    body = api(q="医学", mode="keyword", collection="l-zh")
    assert set(found(body)) == MEDICINE and DOCTOR_LEARNING not in found(body)
    for result in body["results"]:
        assert set(marks(result["snippet_html"])) <= {"医学", "医学院", "医学中心"}  # whole words
    assert marks(next(r for r in body["results"] if r["external_id"] == "zh00")["snippet_html"]) == ["医学"]
    # Before: the standard analyzer matches the characters 医 and 学 anywhere.
    plain = api(q="医学", mode="keyword", collection="l-zh-none")
    assert DOCTOR_LEARNING in found(plain) and len(found(plain)) > 10
    # A word inside a longer one is found, and the whole word is marked.
    body = api(q="生物", mode="keyword", collection="l-zh")
    assert set(found(body)) == {"zh00", "zh04"}
    assert {m for r in body["results"] for m in marks(r["snippet_html"])} == {"生物学", "生物学家"}


@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
def test_collections_of_different_languages_searched_together(api, mode):
    body = api(q="医学 horses", mode=mode, collection="l-en,l-zh")
    by_collection = {(r["collection"], r["external_id"]) for r in body["results"]}
    assert ("l-en", "horses") in by_collection and ("l-zh", "zh00") in by_collection
    keyword = {(r["collection"], r["external_id"]) for r in body["results"] if r["scores"]["keyword_rank"]}
    assert ("l-zh", DOCTOR_LEARNING) not in keyword  # each collection's own analysis
    assert {c for c, _ in by_collection} == {"l-en", "l-zh"}  # and nothing from the others
    for r in body["results"]:
        if r["collection"] == "l-zh" and r["external_id"] == "zh00":
            assert marks(r["snippet_html"]) == ["医学"]
        if r["collection"] == "l-en" and r["external_id"] == "horses":
            assert marks(r["snippet_html"]) == ["horses"]


def test_search_follows_the_live_index_not_the_setting(api, corpus):
    """Changing the setting alone (no rebuild) changes nothing: the live index is `none`."""
    Collection.objects.filter(pk=corpus["none"].pk).update(language="en")
    try:
        assert found(api(q="study run horse", mode="keyword", collection="l-none")) == []
        body = api(q="of the farm", mode="keyword", collection="l-none")
        assert "stops" in found(body)  # stop words are terms under `none`, and marked
        assert any("of" in marks(r["snippet_html"] + r["title_html"]) for r in body["results"])
    finally:
        Collection.objects.filter(pk=corpus["none"].pk).update(language="none")


# --------------------------------------------------------------------------- rebuild_index


def test_rebuild_index_rejects_a_bad_language(corpus):
    with pytest.raises(CommandError, match="unknown language 'xx'; choose one of: en"):
        call_command("rebuild_index", "l-en", "--language", "xx")
    assert not IndexBuild.objects.filter(collection=corpus["en"], status__in=IndexBuild.IN_PROGRESS).exists()
