"""The default bi-encoders, through a real embed worker, the engine and the API: a new Chinese
collection gets bge-small-zh-v1.5 and its semantic mode finds a paraphrase that shares no
character with the query (手机, mobile phone ↔ 智能电话, smartphone), which keyword search cannot;
a new English collection gets bge-small-en-v1.5; the answer says which model each collection's
vectors come from."""
from __future__ import annotations

import pytest

from indexer.models import Collection, IndexBuild
from indexer.store import alias_name
from tests.support.indexing import all_indexed, index_all, statuses, wait_for
from tests.support.searching import add_documents, drop_collections

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = "zh-phone"
CHINESE = [
    (PHONE, "", "这款智能电话的电池可以连续使用两天", {}),  # this smartphone's battery lasts two days
    ("zh-rice", "", "农民在秋天收割水稻", {}),  # farmers harvest rice in autumn
    ("zh-bridge", "", "工程师设计了一座新的桥梁", {}),  # engineers designed a new bridge
    ("zh-river", "", "长江是中国最长的河流", {}),  # the Yangtze is China's longest river
    ("zh-tea", "", "她每天早上喝一杯绿茶", {}),  # she drinks green tea every morning
    ("zh-piano", "", "孩子们在音乐课上学习弹钢琴", {}),  # children learn the piano in music class
]
QUERY = "手机"


@pytest.fixture
def collections(es, celery_workers):
    public = Collection.Visibility.PUBLIC
    zh = Collection.objects.create(name="Default zh", slug="default-zh", language="zh", visibility=public)
    en = Collection.objects.create(name="Default en", slug="default-en", visibility=public)
    add_documents(zh, CHINESE)
    add_documents(en, [("en-phone", "Phones", "The battery of this smartphone lasts two days.", {})])
    for collection in (zh, en):
        index_all(collection)
        wait_for(lambda: all_indexed(collection), timeout=600, what=f"indexed, now {statuses(collection)}")
        es.indices.refresh(index=alias_name(collection.slug))
    yield {"zh": zh, "en": en}
    drop_collections(es, zh, en)


def test_chinese_paraphrase_without_a_shared_character(client, collections):
    assert not set(QUERY) & set(CHINESE[0][2])  # not one character in common
    zh, en = collections["zh"], collections["en"]
    assert (zh.embedding_model, en.embedding_model) == ("bge-small-zh-v1.5", "bge-small-en-v1.5")
    build = IndexBuild.objects.get(collection=zh, status=IndexBuild.Status.LIVE)
    assert (build.model_id, build.dims) == ("bge-small-zh-v1.5", 512)

    def search(mode):
        response = client.get("/api/search", {"q": QUERY, "mode": mode, "collection": zh.slug, "rerank": "off"})
        assert response.status_code == 200, response.content
        return response.json()

    semantic = search("semantic")
    assert [r["external_id"] for r in semantic["results"]][0] == PHONE
    assert semantic["embedding_models"] == {zh.slug: "bge-small-zh-v1.5"}
    assert search("keyword")["results"] == []  # no shared word: keyword search finds nothing
    assert search("hybrid")["results"][0]["external_id"] == PHONE

    # Two collections, two models: the query is embedded once per model, each index searched with its own.
    both = client.get("/api/search", {"q": "智能电话 smartphone battery", "mode": "semantic",
                                      "collection": f"{zh.slug},{en.slug}", "rerank": "off"}).json()
    assert both["embedding_models"] == {zh.slug: "bge-small-zh-v1.5", en.slug: "bge-small-en-v1.5"}
    assert {(r["collection"], r["external_id"]) for r in both["results"]} >= {(zh.slug, PHONE), (en.slug, "en-phone")}
