"""Search through the real stack: Elasticsearch, the indexing pipeline, a real rerank worker.

Every mode with reranking on, off, timed out and with the worker down; filters; pagination;
grouping; both ways of embedding the query.
"""
from __future__ import annotations

import math

import pytest
from django.conf import settings as django_settings

from indexer.store import alias_name
from indexer.models import Collection
from search.query_vectors import vector_cache
from tests.support.searching import (SCIENCE, add_documents, build_reranker, drop_collections, index_now, long_text,
                             search_settings)
from tests.support.workers import Worker

pytestmark = pytest.mark.django_db
MODES = ("semantic", "keyword", "hybrid")
QUERY = "telomerase activity of stem cells"
DOWN = "no rerank worker took the request within 1 s (none is running, or all are busy)"


@pytest.fixture(scope="module")
def corpus(es, django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        sci = Collection.objects.create(name="Search sci", slug="s-sci", chunk_size=48, chunk_overlap=8,
                                        visibility=Collection.Visibility.PUBLIC)
        extra = Collection.objects.create(name="Search extra", slug="s-extra", visibility=Collection.Visibility.PUBLIC)
        docs = [(f"sci{i}", title, text, {"year": 2020 + i % 2, "kind": "review" if i % 4 == 0 else "study"})
                for i, (title, text) in enumerate(SCIENCE)]
        docs.append(("long-telomere", "Telomere biology over many sections", long_text("telomerase activity"),
                     {"year": 2020, "kind": "study"}))
        docs.append(("long-insulin", "Insulin resistance over many sections", long_text("insulin resistance"),
                     {"year": 2021, "kind": "study"}))
        add_documents(sci, docs)
        add_documents(extra, [
            ("x1", "Telomerase in cancer cells", "Cancer cells reactivate telomerase to escape senescence.", {"year": 2019}),
            ("x2", "Stem cell niches", "Stem cells live in niches that regulate their division.", {"year": 2019}),
            ("x3", "Glucose sensing", "Pancreatic beta cells sense glucose and release insulin.", {"year": 2019}),
        ])
        index_now(es, sci, extra)
        yield {"sci": sci, "extra": extra}
        drop_collections(es, sci, extra)


@pytest.fixture
def api(client, settings, corpus, rerank_worker):
    search_settings(settings, build_reranker())

    def get(**params):
        response = client.get("/api/search", params)
        assert response.status_code == 200, response.content
        return response.json()

    return get


def chunk_text(es, result) -> tuple[str, str]:
    source = es.get(index=alias_name(result["collection"]),
                    id=f"{result['collection']}/{result['external_id']}/{result['chunk']}")["_source"]
    return source["title"], source["text"]


def reference_logits(es, query: str, results: list[dict]) -> list[float]:
    """The test's own cross-encoder run on the same pairs, in this process."""
    from reranker.cross_encoder import score_passages

    passages = []
    for result in results:
        title, text = chunk_text(es, result)
        passages.append(f"{title}\n{text}" if title else text)
    return [float(x) for x in score_passages(build_reranker(), query, passages)]


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_reranked_by_the_worker(api, es, settings, mode):
    # Plain RRF, so that the fused scores can be recomputed from the ranks below (the default
    # rules: tests/integration/test_hybrid_fusion.py).
    settings.SEARCH_HYBRID_FUSION = "rrf:0.5:60"
    body = api(q=QUERY, mode=mode, k=50, group="off")
    assert body["rerank"]["applied"] is True and body["not_reranked"] is None
    assert body["rerank"]["model"] == build_reranker()
    assert body["results"] and len(body["results"]) == body["total"]
    assert body["rerank"]["candidates"] == min(django_settings.RERANK_TOP_N, body["total"])
    # The reranked head comes first, the rest keeps first-stage order after it.
    results = body["results"][: body["rerank"]["candidates"]]
    assert all(r["scores"]["reranker_logit"] is None for r in body["results"][len(results):])
    # The final order is the order of the reranker's logits, which are the model's own scores.
    logits = [r["scores"]["reranker_logit"] for r in results]
    assert logits == sorted(logits, reverse=True)
    assert [r["scores"]["final_rank"] for r in results] == list(range(1, len(results) + 1))
    for got, want in zip(logits, reference_logits(es, QUERY, results)):
        assert got == pytest.approx(want, abs=2e-3)
    for r in results:
        s = r["scores"]
        assert s["reranker_sigmoid"] == pytest.approx(1 / (1 + math.exp(-s["reranker_logit"])), abs=1e-5)
        assert 0 < s["reranker_sigmoid"] < 1
    first_stage = sorted(results, key=lambda r: r["scores"]["first_stage_rank"])
    assert [r["scores"]["first_stage_rank"] for r in first_stage] == list(range(1, len(results) + 1))
    scores = [r["scores"]["first_stage"] for r in first_stage]
    assert scores == sorted(scores, reverse=True)
    if mode == "semantic":
        assert all(r["scores"]["semantic_rank"] and r["scores"]["keyword_rank"] is None for r in results)
    elif mode == "keyword":
        assert all(r["scores"]["keyword_rank"] and r["scores"]["semantic_rank"] is None for r in results)
        assert all("<mark>" in r["snippet_html"] + r["title_html"] for r in results)
    else:
        for r in results:  # reciprocal rank fusion, k = 60, each list weighted 0.5
            ranks = [x for x in (r["scores"]["semantic_rank"], r["scores"]["keyword_rank"]) if x]
            assert r["scores"]["first_stage"] == pytest.approx(sum(0.5 / (60 + x) for x in ranks), abs=1e-6)
    timings = body["timings_ms"]
    assert timings["elasticsearch"] > 0 and timings["rerank"] > 0
    assert timings["total"] >= timings["embed"] + timings["elasticsearch"] + timings["rerank"]
    if mode == "keyword":
        assert timings["embed"] == 0 and body["query_vector_cached"] is None
    else:
        assert timings["embed"] > 0 and body["query_vector_cached"] in (True, False)


@pytest.mark.backend
@pytest.mark.parametrize("mode", MODES)
def test_rerank_off_keeps_the_first_stage_order(api, mode):
    body = api(q=QUERY, mode=mode, rerank="off", k=50)
    assert body["rerank"] == {"requested": False, "applied": False, "not_reranked": None, "model": None,
                              "candidates": 0, "reranked": 0, "runtime": None, "precision": None, "fusion": None,
                              "models": []}
    assert body["not_reranked"] is None and body["timings_ms"]["rerank"] == 0
    ranks = [r["scores"]["first_stage_rank"] for r in body["results"]]
    assert ranks == sorted(ranks) and ranks[0] == 1
    assert all(r["scores"]["reranker_logit"] is None for r in body["results"])
    if mode != "semantic":
        assert body["results"][0]["external_id"] in {"sci0", "long-telomere", "x1"}


@pytest.mark.parametrize("mode", MODES)
def test_rerank_timeout_shows_first_stage_order_flagged(api, client, settings, mode):
    # The wait itself, as with admission control off: on, a 1 ms budget is refused before sending
    # (tests/integration/test_load_shedding.py).
    settings.RERANK_ADMISSION = False
    settings.RERANK_TIMEOUT = 0.001
    body = api(q=QUERY, mode=mode, k=50)
    assert body["rerank"]["applied"] is False
    # Within 1 ms the worker has either not taken the request yet, or not finished it.
    assert body["not_reranked"] in {"the rerank worker did not answer within 0.001 s",
                                    "no rerank worker took the request within 0.001 s (none is running, or all are busy)"}
    ranks = [r["scores"]["first_stage_rank"] for r in body["results"]]
    assert ranks == sorted(ranks) and all(r["scores"]["reranker_logit"] is None for r in body["results"])
    page = client.get("/", {"q": QUERY, "mode": mode})
    assert page.status_code == 200
    assert "not reranked:" in page.content.decode() and "within 0.001 s" in page.content.decode()


def test_worker_down_is_flagged_not_an_error(api, client, settings):
    """A real worker on its own queue answers, is stopped, and the next search says so."""
    settings.RERANK_QUEUE = "rerank-doomed"
    worker = Worker("rerank-doomed", extra_env={"RERANKER_MODEL": build_reranker()}).start()
    try:
        assert api(q=QUERY, mode="hybrid")["rerank"]["applied"] is True
    finally:
        worker.stop()
    settings.RERANK_TIMEOUT = 1.0
    for mode in MODES:
        body = api(q=QUERY, mode=mode)
        assert body["not_reranked"] == DOWN and body["results"]
        ranks = [r["scores"]["first_stage_rank"] for r in body["results"]]
        assert ranks == sorted(ranks)
    page = client.get("/", {"q": QUERY})
    assert page.status_code == 200 and "not reranked:" in page.content.decode()
    assert DOWN in page.content.decode()


def test_no_model_configured(api, settings):
    settings.RERANKER_MODEL = ""
    body = api(q=QUERY, mode="keyword")
    assert body["not_reranked"] == "no reranker model configured" and body["results"]


def in_own_places(results: list[dict], model_of: dict[str, str | None]) -> dict[str, list[dict]]:
    """Results (ungrouped) by the model that reranked them; asserts that every model's share is
    ordered by its logits within the places its chunks held in the first stage, and that the
    others kept their places."""
    shares: dict = {}
    for place, r in enumerate(results, 1):
        shares.setdefault(model_of[r["collection"]], []).append((place, r))
    for model, items in shares.items():
        places = [place for place, _ in items]
        first_places = sorted(r["scores"]["first_stage_rank"] for _, r in items)
        if model is None:
            assert all(r["scores"]["reranker_logit"] is None for _, r in items)
            assert [r["scores"]["first_stage_rank"] for _, r in items] == places
        else:
            assert places == first_places, "a share stays in the places it held"
            logits = [r["scores"]["reranker_logit"] for _, r in items]
            assert None not in logits and logits == sorted(logits, reverse=True)
    return {model: [r for _, r in items] for model, items in shares.items()}


def test_collection_reranker_model_goes_to_the_worker(api, corpus, tmp_path):
    """A collection's own reranker_model wins over the setting; one the worker cannot load is
    reported, not raised. A search over collections with different rerankers reranks each
    model's share of the head in the places that share held."""
    import shutil

    Collection.objects.filter(pk=corpus["extra"].pk).update(reranker_model="/nonexistent/reranker")
    body = api(q=QUERY, mode="keyword", collection="s-extra")
    assert body["not_reranked"].startswith("the rerank worker failed: ")
    assert "/nonexistent/reranker" in body["not_reranked"] and body["results"]
    # Both collections: the site's model reranks s-sci's share, s-extra's share keeps its places.
    body = api(q=QUERY, mode="keyword", k=50, group="off")
    assert body["rerank"]["applied"] is True and body["not_reranked"] is None and body["rerank"]["model"] is None
    by_model = {m["model"]: m for m in body["rerank"]["models"]}
    assert by_model["/nonexistent/reranker"]["applied"] is False
    assert by_model["/nonexistent/reranker"]["not_reranked"].startswith("the rerank worker failed: ")
    assert by_model[build_reranker()]["applied"] is True
    assert body["rerank"]["reranked"] == by_model[build_reranker()]["candidates"] < body["rerank"]["candidates"]
    head = body["results"][: body["rerank"]["candidates"]]
    in_own_places(head, {"s-sci": build_reranker(), "s-extra": None})
    # A second working model (a copy under another name): both shares reranked, each in place.
    other = tmp_path / "other-reranker"
    shutil.copytree(build_reranker(), other, ignore=shutil.ignore_patterns("openvino"))
    Collection.objects.filter(pk=corpus["extra"].pk).update(reranker_model=str(other))
    body = api(q=QUERY, mode="keyword", k=50, group="off")
    assert body["rerank"]["applied"] is True and body["rerank"]["reranked"] == body["rerank"]["candidates"]
    assert {m["model"] for m in body["rerank"]["models"] if m["applied"]} == {build_reranker(), str(other)}
    shares = in_own_places(body["results"][: body["rerank"]["candidates"]],
                           {"s-sci": build_reranker(), "s-extra": str(other)})
    assert set(shares) == {build_reranker(), str(other)}
    # The collection naming the site's own model is reranked by it, as one share.
    Collection.objects.filter(pk=corpus["extra"].pk).update(reranker_model=build_reranker())
    body = api(q=QUERY, mode="keyword")
    assert body["rerank"]["applied"] is True and body["rerank"]["model"] == build_reranker()


def test_rerank_depth_follows_the_workers_measured_speed(api, settings):
    """A search sends as many chunks as the workers' measured speed fits in
    RERANK_TARGET_SECONDS, never fewer than RERANK_MIN_CANDIDATES, at most RERANK_TOP_N."""
    from reranker.cross_encoder import load_reranker
    from reranker.speed import read_report, write_speed

    reranker = load_reranker(build_reranker())
    settings.RERANK_TARGET_SECONDS, settings.RERANK_MIN_CANDIDATES = 0.5, 4
    for pairs_per_second, expected in ((20, 10), (2, 4), (1000, django_settings.RERANK_TOP_N)):
        write_speed(reranker, pairs_per_second, smooth=False)
        body = api(q=QUERY, mode="hybrid", k=50, group="off")
        assert body["total"] > 10
        assert body["rerank"]["applied"] is True and body["rerank"]["candidates"] == min(expected, len(body["results"]))
        assert body["rerank"]["reranked"] == body["rerank"]["candidates"]
        logits = [r["scores"]["reranker_logit"] for r in body["results"]]
        assert all(x is not None for x in logits[:body["rerank"]["candidates"]])
        assert all(x is None for x in logits[body["rerank"]["candidates"]:])
        # The worker refreshed the figure from this request (a moving average).
        assert read_report(build_reranker())["pairs_per_second"] != pairs_per_second
    report = read_report(build_reranker())
    assert report["runtime"] == body["rerank"]["runtime"] == "openvino"
    assert body["rerank"]["precision"] == "float32"  # no int8 model was made for this one


def test_a_models_fusion_with_the_first_stage_orders_the_head(api, corpus, tmp_path):
    """A model directory with a fusion.json (written by train_reranker): the worker sends its
    fusion with the logits and the head is ordered by it (reranker/fusion.py). A weight of 100
    on the first stage's log-rank lets it decide, so the final order is the first-stage order,
    logits and all."""
    import shutil

    from reranker.fusion import Fusion, ModelFusion, save_fusion

    model = tmp_path / "fused-reranker"
    shutil.copytree(build_reranker(), model)
    # keyword: the first stage decides; other modes: the logits alone.
    save_fusion(ModelFusion(default=Fusion(weight=0.0, k=10),
                            modes=(("keyword", Fusion(weight=100.0, k=10, kind="score")),)), model)
    Collection.objects.filter(pk=corpus["sci"].pk).update(reranker_model=str(model))
    try:
        body = api(q=QUERY, mode="keyword", collection="s-sci", k=50, group="off")
        assert body["rerank"]["applied"] is True and body["rerank"]["model"] == str(model)
        assert body["rerank"]["fusion"] == {"weight": 100.0, "k": 10, "kind": "score"}
        head = body["results"][: body["rerank"]["candidates"]]
        logits = [r["scores"]["reranker_logit"] for r in head]
        assert all(x is not None for x in logits) and logits != sorted(logits, reverse=True)
        assert [r["scores"]["first_stage_rank"] for r in head] == list(range(1, len(head) + 1))
        body = api(q=QUERY, mode="semantic", collection="s-sci", k=50, group="off")
        assert body["rerank"]["fusion"] == {"weight": 0.0, "k": 10, "kind": "rrf"}
        logits = [r["scores"]["reranker_logit"] for r in body["results"][: body["rerank"]["candidates"]]]
        assert logits == sorted(logits, reverse=True)
        # Without the file the same model orders by its logits alone.
        (model / "fusion.json").unlink()
        renamed = tmp_path / "plain-reranker"
        model.rename(renamed)
        Collection.objects.filter(pk=corpus["sci"].pk).update(reranker_model=str(renamed))
        body = api(q=QUERY, mode="keyword", collection="s-sci", k=50, group="off")
        logits = [r["scores"]["reranker_logit"] for r in body["results"][: body["rerank"]["candidates"]]]
        assert body["rerank"]["fusion"] == {"weight": 0.0, "k": 10, "kind": "rrf"} and logits == sorted(logits, reverse=True)
    finally:
        Collection.objects.filter(pk=corpus["sci"].pk).update(reranker_model="")


@pytest.mark.backend
@pytest.mark.parametrize("mode", MODES)
def test_filters_by_collection_and_metadata(api, mode):
    body = api(q=QUERY, mode=mode, collection="s-extra", k=50)
    assert body["collections"] == ["s-extra"] and {r["collection"] for r in body["results"]} == {"s-extra"}
    everything = api(q=QUERY, mode=mode, k=50, group="off")
    assert {r["collection"] for r in everything["results"]} == {"s-sci", "s-extra"}

    body = api(q=QUERY, mode=mode, k=50, **{"meta.year": "2020"})
    assert body["results"] and all(r["metadata"]["year"] == 2020 for r in body["results"])
    # Values of one key are alternatives; different keys must all match.
    body = api(q=QUERY, mode=mode, k=50, **{"meta.year": ["2019", "2021"]})
    assert {r["metadata"]["year"] for r in body["results"]} == {2019, 2021}
    body = api(q=QUERY, mode=mode, k=50, **{"meta.year": "2020", "meta.kind": "review"})
    assert body["results"] and all(r["metadata"] == {"year": 2020, "kind": "review"} for r in body["results"])
    # The filter is inside the query: the matching documents are all there, not a remainder.
    # (kNN finds every chunk of the filtered set; BM25 only those with a query term.)
    expected = {"sci0"} if mode == "keyword" else {"sci0", "sci4"}
    assert {r["external_id"] for r in body["results"]} == expected
    body = api(q=QUERY, mode=mode, collection="s-extra", **{"meta.year": "2020"})
    assert body["results"] == [] and body["total"] == 0


@pytest.mark.backend
def test_pagination_is_stable(api):
    full = api(q=QUERY, mode="hybrid", k=50)
    assert full["total"] > 6
    seen, page = [], 1
    while True:
        body = api(q=QUERY, mode="hybrid", k=3, page=page)
        assert body["total"] == full["total"] and body["pages"] == math.ceil(full["total"] / 3)
        assert body["from_snapshot"] is (page > 1)
        seen += body["results"]
        if page == body["pages"]:
            break
        page += 1
    assert [r["rank"] for r in seen] == list(range(1, full["total"] + 1))
    assert [(r["collection"], r["external_id"]) for r in seen] == [
        (r["collection"], r["external_id"]) for r in full["results"]]
    # Past the last page but within range: an empty page, not an error.
    body = api(q=QUERY, mode="hybrid", k=3, page=page + 1)
    assert body["results"] == [] and body["total"] == full["total"]


def test_pages_keep_the_order_of_page_one_even_if_reranking_changes(api, settings):
    first = api(q=QUERY, mode="semantic", k=4, page=1)
    assert first["rerank"]["applied"] is True
    settings.RERANK_TIMEOUT = 0.001  # a new search would not be reranked now
    second = api(q=QUERY, mode="semantic", k=4, page=2)
    assert second["from_snapshot"] and second["rerank"]["applied"] is True
    ids = [r["document_id"] for r in first["results"] + second["results"]]
    assert len(ids) == len(set(ids))


def test_grouping_per_document(api):
    grouped = api(q=QUERY, mode="keyword", k=50)
    chunks = api(q=QUERY, mode="keyword", k=50, group="off")
    doc_ids = [r["document_id"] for r in grouped["results"]]
    assert len(doc_ids) == len(set(doc_ids))
    chunk_doc_ids = [r["document_id"] for r in chunks["results"]]
    assert len(chunk_doc_ids) > len(set(chunk_doc_ids)) and set(chunk_doc_ids) == set(doc_ids)
    long_doc = next(r for r in grouped["results"] if r["external_id"] == "long-telomere")
    its_chunks = [r for r in chunks["results"] if r["external_id"] == "long-telomere"]
    assert len(its_chunks) > 1
    # The document stands where its best chunk stands, and lists its other chunks.
    assert long_doc["chunk"] == its_chunks[0]["chunk"]
    assert long_doc["other_chunks"] == [r["chunk"] for r in its_chunks[1:]]
    before = {r["document_id"] for r in chunks["results"][: chunks["results"].index(its_chunks[0])]}
    assert long_doc["rank"] == len(before) + 1


def test_query_vectors_are_cached(api):
    vector_cache.clear()
    first = api(q="how do neurons store memory", mode="semantic")
    again = api(q="how do neurons store memory", mode="semantic")
    assert first["query_vector_cached"] is False and again["query_vector_cached"] is True
    assert again["timings_ms"]["embed"] < first["timings_ms"]["embed"]
    assert [r["external_id"] for r in again["results"]] == [r["external_id"] for r in first["results"]]


def test_query_embedding_through_the_embed_queue(api, settings, celery_workers):
    local = api(q="antibody binding site", mode="semantic", rerank="off")
    vector_cache.clear()
    settings.QUERY_EMBEDDING = "queue"
    settings.QUERY_EMBEDDING_TIMEOUT = 120  # the worker loads its model on first use (shared CPU)
    queued = api(q="antibody binding site", mode="semantic", rerank="off")
    assert queued["query_vector_cached"] is False
    assert [r["external_id"] for r in queued["results"]] == [r["external_id"] for r in local["results"]]
    for a, b in zip(local["results"], queued["results"]):
        assert a["scores"]["first_stage"] == pytest.approx(b["scores"]["first_stage"], abs=1e-4)


def test_search_page_shows_results_and_internals_only_to_staff(client, settings, corpus, rerank_worker,
                                                               django_user_model):
    search_settings(settings, build_reranker())
    page = client.get("/", {"q": QUERY, "mode": "hybrid", "k": 3})
    html = page.content.decode()
    assert page.status_code == 200
    assert "<mark>" in html and 'rel="next"' in html and 'aria-current="page"' in html
    assert html.count('<li class="card result"') == 3
    # A visitor sees no scores, ranks, offsets, timings or model.
    for internal in ("reranker logit", "sigmoid", "first stage", "characters", "<th>embed</th>", "Reranked by", "<details>"):
        assert internal not in html, internal
    # Staff see them behind a "Details" disclosure.
    client.force_login(django_user_model.objects.create_user("inspector", is_staff=True))
    html = client.get("/", {"q": QUERY, "mode": "hybrid", "k": 3}).content.decode()
    assert html.count("<details>") == 4  # the page's and each result's
    assert "reranked by" in html and "reranker logit" in html and "sigmoid" in html and "first stage" in html
    for stage in ("embed", "Elasticsearch", "rerank", "total"):
        assert f"<th>{stage}</th>" in html
    # Empty state and no-result state
    empty = client.get("/").content.decode()
    assert "Type a query above" in empty
    nothing = client.get("/", {"q": "xylophone quasar", "mode": "keyword"}).content.decode()
    assert "No results." in nothing
    assert django_settings.SEARCH_DEFAULT_MODE in MODES


def test_staff_mark_a_result_relevant_from_the_search_page(api, corpus, settings):
    """The page's relevant / not relevant buttons (staff only) post a judgment with a working
    CSRF token and come back to the same results page."""
    import re
    from html import unescape

    from django.contrib.auth.models import User
    from django.test import Client

    from relevance.models import Judgment

    browser = Client(enforce_csrf_checks=True)
    page = browser.get("/", {"q": QUERY, "mode": "keyword", "collection": "s-sci"}).content.decode()
    assert 'class="judge"' not in page  # anonymous: no buttons
    User.objects.create_user("curator", password="pw", is_staff=True)
    browser.login(username="curator", password="pw")
    page = browser.get("/", {"q": QUERY, "mode": "keyword", "collection": "s-sci"}).content.decode()
    form = re.search(r'<form class="judge" method="post" action="([^"]+)">(.*?)</form>', page, re.S)
    assert form, "staff see the judgment buttons"
    fields = {name: unescape(value) for name, value in re.findall(r'name="([^"]+)" value="([^"]*)"', form.group(2))}
    fields["grade"] = "relevant"
    response = browser.post(form.group(1), fields)
    assert response.status_code == 302 and response["Location"] == fields["next"]
    judgment = Judgment.objects.get(collection=corpus["sci"], query=QUERY, document__external_id=fields["document"])
    assert judgment.grade == 1 and judgment.judged_by.username == "curator"
    fields["grade"] = "not-relevant"
    assert browser.post(form.group(1), fields).status_code == 302
    judgment.refresh_from_db()
    assert judgment.grade == 0
    Judgment.objects.filter(pk=judgment.pk).delete()


def test_staff_cannot_judge_in_a_collection_they_may_not_see(client, corpus, django_user_model):
    from relevance.models import Judgment
    from tests.support.searching import add_documents

    hidden = Collection.objects.create(name="Hidden", slug="s-hidden", visibility=Collection.Visibility.GROUPS)
    add_documents(hidden, [("h1", "Hidden", "Hidden text.", {})])
    client.force_login(django_user_model.objects.create_user("judge", is_staff=True))
    response = client.post("/judgments/record", {"collection": "s-hidden", "query": QUERY, "document": "h1", "grade": 2})
    assert response.status_code == 400 and response.json() == {"error": "unknown collection"}
    assert not Judgment.objects.filter(collection=hidden).exists()
    visible = client.post("/judgments/record", {"collection": "s-sci", "query": QUERY, "document": "sci0", "grade": 3})
    assert visible.status_code == 201 and visible.json()["grade"] == 3
