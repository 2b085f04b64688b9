"""Search analytics through the real stack (Elasticsearch, the page, the API): every search is a
log row, the page's result links log a click and lead to the document, the API's search_id takes
clicks by rank and by document, and logging can be switched off."""
from __future__ import annotations

import re
from html import unescape

import pytest

from analytics.models import SearchClick, SearchLog
from indexer.models import Collection
from tests.support.searching import SCIENCE, add_documents, drop_collections, index_now

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def corpus(es, django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        col = Collection.objects.create(name="Analytics", slug="an-col", visibility=Collection.Visibility.PUBLIC)
        add_documents(col, [(f"s{i}", title, text, {}) for i, (title, text) in enumerate(SCIENCE)])
        index_now(es, col)
        yield col
        drop_collections(es, col)


def test_page_search_is_logged_and_a_result_link_logs_the_click(client, corpus):
    response = client.get("/", {"q": "  telomerase   stem cells ", "mode": "keyword", "collection": "an-col",
                                "rerank": "off"})
    assert response.status_code == 200
    row = SearchLog.objects.get()
    assert (row.channel, row.query, row.mode, row.reranked) == ("page", "telomerase stem cells", "keyword", False)
    assert row.result_count >= 1 and row.latency_ms > 0 and list(row.collections.all()) == [corpus]
    # An anonymous id from the visitor's session, the same on their next search; no address kept.
    assert row.session and client.session["analytics_session"] == row.session
    assert not any(str(value) == "127.0.0.1" for value in SearchLog.objects.values().get().values())
    links = [unescape(href) for href in re.findall(r'<div class="title"><a href="([^"]+)"', response.content.decode())]
    assert links and all(link.startswith("/click?") for link in links)
    response = client.get(links[0])
    assert response.status_code == 302 and response["Location"] == f"/documents/{row.shown[0]}?chunk=0"
    assert client.get(response["Location"]).status_code == 200
    click = SearchClick.objects.get()
    assert (click.search_id, click.rank, click.document_id, click.channel) == (row.pk, 1, row.shown[0], "page")
    client.get("/", {"q": "insulin", "mode": "keyword"})
    assert SearchLog.objects.filter(query="insulin").get().session == row.session


def test_api_search_carries_search_id_and_takes_clicks(client, corpus):
    answer = client.get("/api/search", {"q": "insulin glucose", "mode": "keyword", "rerank": "off"},
                        HTTP_X_SEARCH_SESSION="sim-1").json()
    row = SearchLog.objects.get(pk=answer["search_id"])
    assert (row.channel, row.session, row.result_count) == ("api", "sim-1", answer["total"])
    assert row.shown == [r["document_id"] for r in answer["results"]]
    response = client.post("/api/clicks", {"search_id": answer["search_id"], "rank": 1}, content_type="application/json")
    assert response.status_code == 201 and response.json()["document"] == answer["results"][0]["document_id"]
    last = answer["results"][-1]
    response = client.post("/api/clicks", {"search_id": answer["search_id"], "document": last["document_id"]},
                           content_type="application/json")
    assert response.json()["rank"] == last["rank"]
    assert sorted(SearchClick.objects.filter(search=row).values_list("rank", flat=True)) == sorted({1, last["rank"]})
    # A search that finds nothing is logged with 0 results (the report's zero-result queries).
    empty = client.get("/api/search", {"q": "zzzqqqxxy", "mode": "keyword"}).json()
    assert empty["total"] == 0 and SearchLog.objects.get(pk=empty["search_id"]).result_count == 0


def test_logging_off(client, corpus, settings):
    settings.SEARCH_LOG_ENABLED = False
    answer = client.get("/api/search", {"q": "insulin", "mode": "keyword"}).json()
    assert "search_id" not in answer and answer["total"] >= 1 and not SearchLog.objects.exists()
    page = client.get("/", {"q": "insulin", "mode": "keyword"}).content.decode()
    assert "/click?" not in page and "/documents/" in page
