"""The search log without services: a logged search (the listener the query path calls), clicks
by rank and by document with their errors, the click redirect (never an open redirect), the
POST /api/clicks errors, the switch, and pruning past SEARCH_LOG_DAYS."""
from __future__ import annotations

import json
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.test import RequestFactory
from django.utils import timezone

from analytics.models import SearchClick, SearchLog
from analytics.report import build_report
from analytics.search_log import BadClick, UnknownSearch, log_search, prune, record_click
from indexer.models import Collection, Document

pytestmark = pytest.mark.django_db


@pytest.fixture
def collection():
    col = Collection.objects.create(name="Papers", slug="papers", visibility=Collection.Visibility.PUBLIC)
    for ext in ("d1", "d2", "d3"):
        doc = Document(collection=col, external_id=ext, title=f"Title {ext}", text=f"Text of {ext}")
        doc.refresh_hash()
        doc.save()
    return col


def logged(collection, query="  Telomere   length ", results=None, page=1, channel="api", session_header=None):
    documents = list(collection.documents.order_by("pk").values_list("pk", flat=True))
    results = [{"rank": (page - 1) * 10 + i, "document_id": d, "chunk": 0} for i, d in enumerate(documents, 1)] \
        if results is None else results
    params = SimpleNamespace(query=query, mode="hybrid", page=page, k=10, collections=[collection])
    answer = {"total": len(results), "rerank": {"applied": True}, "results": results}
    request = RequestFactory().get("/api/search", **({"HTTP_X_SEARCH_SESSION": session_header} if session_header else {}))
    log_search(request, channel, params, answer, 12.345)
    return answer, documents


def test_a_search_is_logged_normalised_and_the_answer_carries_its_id(collection):
    answer, documents = logged(collection, session_header="user-7")
    row = SearchLog.objects.get(pk=answer["search_id"])
    assert (row.query, row.mode, row.channel, row.result_count, row.reranked, row.latency_ms, row.session) == \
        ("Telomere length", "hybrid", "api", 3, True, 12.35, "user-7")
    assert list(row.collections.all()) == [collection]
    assert (row.first_rank, row.shown) == (1, documents)
    # A header that is not a plain id is not stored (no free text, no IP address anywhere).
    answer, _ = logged(collection, session_header="10.0.0.1; drop")
    assert SearchLog.objects.get(pk=answer["search_id"]).session == ""


def test_logging_off_logs_nothing(collection, settings):
    settings.SEARCH_LOG_ENABLED = False
    answer, _ = logged(collection)
    assert "search_id" not in answer and not SearchLog.objects.exists()


def test_clicks_by_rank_or_document_on_a_later_page(collection):
    answer, documents = logged(collection, page=2)
    sid = answer["search_id"]
    assert record_click(sid, channel="api", rank=12).document_id == documents[1]
    assert record_click(sid, channel="api", document=documents[2]).rank == 13
    assert record_click(sid, channel="api", rank=11, document=documents[0]).rank == 11
    with pytest.raises(BadClick, match=r"rank 1 was not shown by this search \(it showed ranks 11 to 13\)"):
        record_click(sid, channel="api", rank=1)
    with pytest.raises(BadClick, match=f"rank 11 of this search is document {documents[0]}, not {documents[1]}"):
        record_click(sid, channel="api", rank=11, document=documents[1])
    with pytest.raises(BadClick, match="document 999999 was not among this search's results"):
        record_click(sid, channel="api", document=999999)
    with pytest.raises(UnknownSearch, match="no search with id 'nope' is logged"):
        record_click("nope", channel="api", rank=1)
    assert SearchClick.objects.count() == 3


def test_click_redirect_goes_to_the_document_page_only(client, collection):
    answer, documents = logged(collection)
    response = client.get("/click", {"search": answer["search_id"], "rank": 2, "document": documents[1], "chunk": 0})
    assert response.status_code == 302 and response["Location"] == f"/documents/{documents[1]}?chunk=0"
    assert SearchClick.objects.get().rank == 2
    # No URL is ever taken from the request: extra parameters change nothing.
    response = client.get("/click", {"search": answer["search_id"], "rank": 1, "document": documents[0],
                                     "next": "https://evil.example/", "to": "//evil.example"})
    assert response["Location"] == f"/documents/{documents[0]}"
    # A pruned or unknown search still leads to the document; the click is not logged.
    response = client.get("/click", {"search": "00000000-0000-0000-0000-000000000000", "rank": 1, "document": documents[0]})
    assert response.status_code == 302 and SearchClick.objects.count() == 2
    for bad, words in [({"rank": 1}, "document must be a whole number"),
                       ({"rank": "x", "document": documents[0]}, "rank must be a whole number"),
                       ({"rank": 1, "document": "https://evil.example"}, "document must be a whole number"),
                       ({"rank": 1, "document": documents[0], "chunk": "-1"}, "chunk must be a whole number")]:
        response = client.get("/click", {"search": answer["search_id"], **bad})
        assert response.status_code == 400 and words in response.content.decode(), bad


def test_api_clicks_answer_errors_with_messages(client, collection):
    answer, documents = logged(collection)
    sid = answer["search_id"]

    def post(body, raw=False):
        return client.post("/api/clicks", body if raw else json.dumps(body), content_type="application/json")

    response = post({"search_id": sid, "rank": 3})
    assert response.status_code == 201 and response.json() == {"search_id": sid, "rank": 3, "document": documents[2]}
    assert post({"search_id": sid, "document": documents[0]}).json()["rank"] == 1
    for body, status, words in [
        ("{not json", 400, "the body is not JSON"), ([1, 2], 400, "must be a JSON object"),
        ({"rank": 1}, 400, "search_id: give"), ({"search_id": sid}, 400, "give the rank or the document"),
        ({"search_id": sid, "rank": 0}, 400, "rank must be a whole number of 1 or more"),
        ({"search_id": sid, "rank": True}, 400, "rank must be a whole number"),
        ({"search_id": sid, "rank": 1.5}, 400, "rank must be a whole number"),
        ({"search_id": sid, "rank": 9}, 400, "rank 9 was not shown"),
        ({"search_id": sid, "rank": 1, "when": "now"}, 400, "unknown field 'when'"),
        ({"search_id": "0" * 32, "rank": 1}, 404, "no search with id"),
    ]:
        response = post(body, raw=isinstance(body, str))
        assert response.status_code == status and words in response.json()["error"], (body, response.content)
    assert client.get("/api/clicks").status_code == 405
    assert SearchClick.objects.count() == 2


def test_prune_deletes_searches_and_clicks_older_than_the_retention(collection, settings):
    settings.SEARCH_LOG_DAYS = 90
    old, _ = logged(collection, query="old")
    recent, _ = logged(collection, query="recent")
    record_click(old["search_id"], channel="api", rank=1)
    record_click(recent["search_id"], channel="api", rank=1)
    SearchLog.objects.filter(pk=old["search_id"]).update(created_at=timezone.now() - timedelta(days=91))
    SearchLog.objects.filter(pk=recent["search_id"]).update(created_at=timezone.now() - timedelta(days=89))
    assert prune() == 1
    assert list(SearchLog.objects.values_list("query", flat=True)) == ["recent"]
    assert SearchClick.objects.get().search_id == SearchLog.objects.get().pk
    call_command("prune_search_log", "--days", "0")
    assert not SearchLog.objects.exists() and not SearchClick.objects.exists()


def test_report_counts_queries_clicks_and_ctr_by_rank(collection):
    first, _ = logged(collection, query="telomere")
    logged(collection, query="telomere")
    logged(collection, query="nothing here", results=[])
    later_page, _ = logged(collection, query="telomere", page=2)  # the same results further on: no new search
    record_click(first["search_id"], channel="api", rank=2)
    record_click(later_page["search_id"], channel="api", rank=11)
    now = timezone.now()
    report = build_report(collection, now - timedelta(days=1), now + timedelta(seconds=1))
    assert (report.searches, report.clicks, report.searches_clicked, report.reranked) == (3, 2, 1, 3)
    assert [(q["query"], q["searches"], q["clicks"]) for q in report.top_queries] == \
        [("telomere", 2, 2), ("nothing here", 1, 0)]
    assert [q["query"] for q in report.zero_result_queries] == ["nothing here"]
    assert report.no_click_queries == []
    assert [(r["rank"], r["shown"], r["clicks"]) for r in report.ctr_by_rank[:4]] == \
        [(1, 2, 0), (2, 2, 1), (3, 2, 0), (4, 0, 0)]
    assert report.ctr_by_rank[1]["ctr"] == 0.5
    assert [d["searches"] for d in report.per_day] == [3]


def test_admin_report_page_shows_tables_and_plots(admin_client, collection):
    first, _ = logged(collection, query="telomere")
    record_click(first["search_id"], channel="api", rank=1)
    response = admin_client.get("/admin/analytics/searchlog/report/", {"collection": "papers", "days": "7"})
    page = response.content.decode()
    assert response.status_code == 200
    assert 'id="top-queries"' in page and "telomere" in page and page.count("data:image/png;base64,") == 2
    response = admin_client.get("/admin/analytics/searchlog/report/", {"collection": "nope", "days": "8"})
    page = response.content.decode()
    assert "No collection &#x27;nope&#x27;" in page and "days must be one of 1, 7, 30, 90, 365" in page
    assert admin_client.get("/admin/analytics/searchlog/").status_code == 200
