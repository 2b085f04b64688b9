"""The API for applications through the real stack: documents sent over HTTP are indexed by a real
embed worker into Elasticsearch (or OpenSearch), read back, searched with a key, deleted from the
index; a key for one collection never reads, finds, counts (facets included) or deletes anything
of another; reranks go through a real rerank worker with the search's budget and admission
control; rate limits count per key in the real Redis. The bad bodies, one by one (no services
needed): tests/unit/test_api_keys.py."""
from __future__ import annotations

import json
import time

import pytest
from django.conf import settings as django_settings

from api.keys import create_key
from indexer.models import Collection, Document
from indexer.store import alias_name
from reranker.backlog import add_request, remove_request
from reranker.speed import read_speed
from tests.support.indexing import wait_for
from tests.support.searching import build_reranker, drop_collections, search_settings

pytestmark = pytest.mark.django_db(transaction=True)

PRIVATE = Collection.Visibility.GROUPS

ALPHA = [{"id": "a1", "title": "Telomerase in stem cells", "text": "Telomerase keeps telomeres long in stem cells.",
          "metadata": {"lab": "alpha-lab"}},
         {"id": "a2", "title": "Telomere shortening", "text": "Telomeres shorten with every cell division.",
          "metadata": {"lab": "alpha-lab"}},
         {"id": "a3", "title": "Insulin", "text": "Insulin lowers blood glucose after a meal.", "metadata": {}}]
BETA = [{"id": "b1", "title": "Telomerase secrets", "text": "Telomerase activity in tumour cells is a secret of beta.",
         "metadata": {"lab": "beta-secret-lab"}}]
OPEN = [{"id": "p1", "title": "Telomeres for everyone", "text": "A public note on telomeres and ageing.", "metadata": {}}]


def auth(key: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def send(client, key, slug, docs):
    body = "\n".join(json.dumps(d) for d in docs) + "\n"
    return client.post(f"/api/collections/{slug}/documents", body, content_type="application/x-ndjson", **auth(key))


def document(client, key, slug, external_id):
    return client.get(f"/api/collections/{slug}/documents/{external_id}", **auth(key))


def wait_indexed(client, key, slug, ids, since=None):
    """Until the API says every document is indexed (after `since`, an indexed_at, when given)."""
    def done():
        bodies = [document(client, key, slug, i).json() for i in ids]
        return all(b["status"] == "indexed" and (since is None or b["indexed_at"] > since) for b in bodies)
    wait_for(done, timeout=600, what=f"{slug} indexed through the API")


@pytest.fixture
def world(es, celery_workers):
    cols = {slug: Collection.objects.create(name=slug.title(), slug=slug, visibility=visibility, facet_fields="lab")
            for slug, visibility in (("alpha", PRIVATE), ("beta", PRIVATE), ("open", Collection.Visibility.PUBLIC))}
    keys = {"alpha-write": create_key("alpha writer", [cols["alpha"]], can_write=True)[1],
            "alpha-read": create_key("alpha reader", [cols["alpha"]])[1],
            "beta-write": create_key("beta writer", [cols["beta"]], can_write=True)[1],
            "open-write": create_key("open writer", [cols["open"]], can_write=True)[1]}
    yield cols, keys
    drop_collections(es, *cols.values())


def search(client, key=None, **params):
    response = client.get("/api/search", {"mode": "hybrid", "rerank": "off", **params}, **(auth(key) if key else {}))
    return response.status_code, response.json()


def test_documents_over_http_are_indexed_found_only_by_their_keys_and_deleted(client, es, world):
    cols, keys = world
    for slug, docs in (("alpha", ALPHA), ("beta", BETA), ("open", OPEN)):
        response = send(client, keys[f"{slug}-write"], slug, docs)
        assert response.status_code == 200, response.content
        assert [r["result"] for r in response.json()["results"]] == ["created"] * len(docs)
    for slug, docs in (("alpha", ALPHA), ("beta", BETA), ("open", OPEN)):
        wait_indexed(client, keys[f"{slug}-write"], slug, [d["id"] for d in docs])
        es.indices.refresh(index=alias_name(slug))

    a1 = document(client, keys["alpha-read"], "alpha", "a1").json()
    assert (a1["status"], a1["model"], a1["error"], a1["title"]) == ("indexed", cols["alpha"].embedding_model, None,
                                                                     ALPHA[0]["title"])
    assert a1["chunks"] >= 1

    listed = client.get("/api/collections", **auth(keys["alpha-read"])).json()["collections"]
    assert [(c["slug"], c["documents"], c["indexed"], c["writable"]) for c in listed] == [("alpha", 3, 3, False)]

    # Search with the alpha key: alpha and the public collection, never beta (results, totals, facets).
    status, answer = search(client, keys["alpha-read"], q="telomerase telomeres")
    assert status == 200, answer
    assert answer["collections"] == ["alpha", "open"]
    assert {r["collection"] for r in answer["results"]} == {"alpha", "open"}
    assert {f["value"] for f in answer["facets"]["collection"]} <= {"alpha", "open"}
    assert "beta-secret-lab" not in json.dumps(answer)
    assert "secret" not in json.dumps(answer)
    # Asking for beta by name: the answer of a collection that does not exist.
    for key in (keys["alpha-read"], None):
        status, answer = search(client, key, q="telomerase", collection="beta")
        assert (status, answer) == (400, {"error": "collection: unknown collection 'beta'"})
    # No key: the public collection only.
    status, answer = search(client, q="telomerase telomeres")
    assert {r["collection"] for r in answer["results"]} == {"open"}
    # The beta key finds beta (and public), never alpha; reads, counts and deletes nothing of alpha.
    status, answer = search(client, keys["beta-write"], q="telomerase telomeres", **{"meta.lab": "alpha-lab"})
    assert (status, answer["results"], answer["total"]) == (200, [], 0)
    assert all(v["documents"] == 0 for values in answer["facets"]["metadata"].values() for v in values
               if v["value"] == "alpha-lab")
    status, answer = search(client, keys["beta-write"], q="telomerase telomeres")
    assert {r["collection"] for r in answer["results"]} == {"beta", "open"}
    assert "alpha-lab" not in json.dumps(answer["facets"])
    assert document(client, keys["beta-write"], "alpha", "a1").status_code == 404
    assert client.delete("/api/collections/alpha/documents/a1", **auth(keys["beta-write"])).status_code == 404
    assert send(client, keys["beta-write"], "alpha", [ALPHA[0]]).status_code == 404
    assert Document.objects.filter(collection=cols["alpha"]).count() == 3

    # The same body again: unchanged, not indexed again; a changed text: updated and indexed again.
    before = document(client, keys["alpha-read"], "alpha", "a2").json()["indexed_at"]
    changed = dict(ALPHA[1], text="Telomeres shorten with every cell division; telomerase slows it.")
    again = send(client, keys["alpha-write"], "alpha", [ALPHA[0], changed, ALPHA[2]]).json()
    assert [r["result"] for r in again["results"]] == ["unchanged", "updated", "unchanged"]
    assert document(client, keys["alpha-read"], "alpha", "a1").json()["indexed_at"] == a1["indexed_at"]
    wait_indexed(client, keys["alpha-read"], "alpha", ["a2"], since=before)
    assert document(client, keys["alpha-read"], "alpha", "a1").json()["indexed_at"] == a1["indexed_at"]

    # Delete: gone from the database at once, from the index once the embed worker has run.
    gone = client.delete("/api/collections/alpha/documents/a1", **auth(keys["alpha-write"]))
    assert gone.status_code == 200, gone.content
    assert document(client, keys["alpha-read"], "alpha", "a1").status_code == 404

    def chunks_of_a1() -> int:
        es.indices.refresh(index=alias_name("alpha"))
        return es.count(index=alias_name("alpha"), body={"query": {"term": {"external_id": "a1"}}})["count"]

    wait_for(lambda: chunks_of_a1() == 0, timeout=120, what="a1's chunks removed from the index")
    status, answer = search(client, keys["alpha-read"], q="telomerase stem cells", collection="alpha")
    assert "a1" not in {r["external_id"] for r in answer["results"]}


def test_rate_limits_count_per_key(client, settings, world):
    cols, keys = world
    settings.SEARCH_RATE_LIMIT_ENABLED = True
    settings.SEARCH_RATE_LIMIT_USER = "2/minute"
    settings.SEARCH_RATE_LIMIT = "100/minute"
    settings.RATE_LIMIT_KEY_PREFIX = f"{django_settings.CELERY_KEY_PREFIX}ratelimit-api-{time.time_ns()}:"
    for key in (keys["alpha-read"], keys["beta-write"]):  # the same address, counted apart
        assert [search(client, key, q="telomerase")[0] for _ in range(2)] == [200, 200]
        response = client.get("/api/search", {"q": "telomerase"}, **auth(key))
        assert response.status_code == 429 and "from one API key" in response.json()["error"]
        assert int(response["Retry-After"]) >= 1
    # Reranks count too (the third request of the alpha key's window).
    response = client.post("/api/rerank", json.dumps({"query": "q", "documents": ["a"]}),
                           content_type="application/json", **auth(keys["alpha-read"]))
    assert response.status_code == 429
    assert search(client, q="telomerase")[0] == 200  # no key: counted by address, not by those keys


def rerank(client, key, body):
    response = client.post("/api/rerank", json.dumps(body), content_type="application/json", **auth(key))
    return response


PASSAGES = ["Telomerase keeps telomeres long in stem cells.", "Insulin lowers blood glucose.",
            "Telomeres shorten with every cell division.", "The Yangtze is China's longest river.",
            "Stem cells divide and renew tissues."]


def test_rerank_through_the_rerank_worker(client, settings, world, rerank_worker):
    cols, keys = world
    model = build_reranker()
    search_settings(settings, model)
    # The worker's first request loads (and on a CPU converts) the model: wait for that once.
    wait_for(lambda: rerank(client, keys["alpha-read"], {"query": "q", "documents": ["a"]}).status_code == 200,
             timeout=600, interval=1, what="the rerank worker's first answer")
    response = rerank(client, keys["alpha-read"], {"query": "telomerase and telomeres", "documents": PASSAGES,
                                                   "top_n": 3, "collection": "alpha"})
    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["model"] == model and answer["scored"] == 5 and answer["runtime"] in ("torch", "openvino")
    results = answer["results"]
    assert len(results) == 3 and [r["logit"] for r in results] == sorted((r["logit"] for r in results), reverse=True)
    for r in results:
        assert abs(r["score"] - 1 / (1 + pow(2.718281828459045, -r["logit"]))) < 1e-6
    # The same passages in reverse: each keeps its own logit (indices point at the passages sent).
    reverse = rerank(client, keys["alpha-read"], {"query": "telomerase and telomeres",
                                                  "documents": PASSAGES[::-1]}).json()["results"]
    by_text = {PASSAGES[r["index"]]: r["logit"] for r in results}
    for r in reverse:
        if PASSAGES[::-1][r["index"]] in by_text:
            assert abs(by_text[PASSAGES[::-1][r["index"]]] - r["logit"]) < 1e-3
    # Another key's collection: unknown.
    assert rerank(client, keys["beta-write"], {"query": "q", "documents": ["a"], "collection": "alpha"}).status_code == 404

    # Saturated (admission control: the backlog cannot be answered within the budget): 503 at once.
    wait_for(lambda: read_speed(model), timeout=60, what="the rerank worker's measured speed")
    settings.RERANK_TIMEOUT = 2.0
    add_request(model, "test-backlog", 10_000_000, time.time() + 60)
    try:
        started = time.perf_counter()
        refused = rerank(client, keys["alpha-read"], {"query": "q", "documents": PASSAGES})
        assert refused.status_code == 503 and "saturated" in refused.json()["error"], refused.content
        assert int(refused["Retry-After"]) >= 1 and time.perf_counter() - started < 1.0
    finally:
        remove_request(model, "test-backlog", 10_000_000)

    # No worker on the queue: 503 with Retry-After once the budget is spent.
    settings.RERANK_QUEUE = "nobody-listens-here"
    settings.RERANK_TIMEOUT = 0.5
    settings.RERANK_ADMISSION = False
    refused = rerank(client, keys["alpha-read"], {"query": "q", "documents": PASSAGES})
    assert refused.status_code == 503 and "no rerank worker took the request" in refused.json()["error"]
    assert refused["Retry-After"] == "1"
