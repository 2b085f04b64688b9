"""Under load the answers stay fast, through a real gunicorn and a real rerank worker:

- the rerank workers saturated by real requests: a search is answered at once with
  "not reranked: the rerank workers are saturated", and rerank_passages() refuses with a
  Retry-After (admission control, search/rerank_client.py);
- a request whose deadline passed before a worker took it is dropped unscored and counted; one
  with little time left is cut to the pairs that fit (reranker/tasks.py);
- past SEARCH_MAX_IN_FLIGHT searches in one web process, 503 at once with Retry-After, JSON for the
  API and a page for the search page (searchsite/admission.py).
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from celery import current_app

from common.service_metrics import read_shared
from indexer.models import Collection
from reranker.deadlines import SATURATED
from tests.support.searching import SEARCH_RERANK_QUEUE, add_documents, build_reranker, drop_collections, index_now, \
    long_text, search_settings
from tests.support.web_server import Gunicorn

QUERY = "telomerase activity of stem cells"
WEB_BUDGET = 2.0


# No test holds a transaction open: the web server writes to the same SQLite file (the search
# log), and an open test transaction would keep its writes waiting for the lock.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def corpus(es, transactional_db):
    collection = Collection.objects.create(name="Shedding", slug="shed", chunk_size=48, chunk_overlap=8,
                                           visibility=Collection.Visibility.PUBLIC)
    add_documents(collection, [(f"d{i}", f"Telomere study {i}", long_text("telomerase activity", 4), {})
                               for i in range(6)])
    index_now(es, collection)
    yield collection
    drop_collections(es, collection)


@pytest.fixture(scope="module")
def server(django_db_setup, rerank_worker):
    server = Gunicorn("shedding", workers=1, threads=4, extra_env={
        "RERANK_QUEUE": SEARCH_RERANK_QUEUE, "RERANKER_MODEL": build_reranker(), "RERANK_TIMEOUT": str(WEB_BUDGET),
        "SEARCH_MAX_IN_FLIGHT": "1", "SEARCH_RETRY_AFTER": "2"}).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def web(server, corpus):
    """The server, once a search of the corpus is reranked: the web process loads its bi-encoder on
    its first search; the worker's first requests may be slower than the budget (a shared CPU; a
    worker that starts here exports its model to OpenVINO first)."""
    deadline = time.monotonic() + 300
    while True:
        status, _, body = server.get_json("/api/search", {"q": QUERY, "collection": "shed"})
        assert status == 200, body
        if body["rerank"]["applied"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert body["rerank"]["applied"], body["rerank"]
    return server


def shared(name: str, **labels) -> int:
    return sum(value for counter, got, value in read_shared() if counter == name and got == labels)


def long_passages(n: int) -> list[str]:
    return [long_text(f"telomere length {i}") for i in range(n)]


def test_saturated_workers_answer_at_once(web, settings):
    from search.rerank_client import RerankSaturated, rerank_passages

    search_settings(settings, build_reranker())
    settings.RERANK_TIMEOUT = 5.0  # this process fills the workers' backlog with 5 s of work
    outcomes, lock = [], threading.Lock()

    def occupy():
        try:
            share = rerank_passages(QUERY, long_passages(50))
            result = ("sent", len(share.logits or []), share.reason)
        except RerankSaturated as exc:  # refused before sending
            result = ("saturated", exc.retry_after, None)
        with lock:
            outcomes.append(result)

    threads = []
    # One after another, each seeing the backlog the earlier ones entered, until admission refuses
    # one: how many that takes depends on the speed the worker measured (a loaded machine's
    # worker is slower), each entry stays until answered or given up (5 s), and 100 requests of 50
    # pairs in those 5 s outrun any CPU worker.
    while len(threads) < 100 and not any(kind == "saturated" for kind, _, _ in outcomes):
        threads.append(threading.Thread(target=occupy))
        threads[-1].start()
        time.sleep(0.05)
    started = time.perf_counter()
    status, _, body = web.get_json("/api/search", {"q": QUERY, "collection": "shed"})
    elapsed = time.perf_counter() - started
    page_status, _, page = web.get("/", {"q": QUERY, "collection": "shed"})  # the backlog is still there
    for thread in threads:
        thread.join(60)
    assert status == 200 and body["results"]
    assert body["rerank"]["applied"] is False and body["not_reranked"] == SATURATED, body["rerank"]
    # At once: not the budget's 2 s of waiting.
    assert body["timings_ms"]["rerank"] < 300 and elapsed < WEB_BUDGET, (body["timings_ms"], elapsed)
    assert body["rerank"]["candidates"] == 0
    assert page_status == 200 and b"<strong>not reranked:</strong> the rerank workers are saturated" in page
    kinds = [kind for kind, _, _ in outcomes]
    assert "sent" in kinds and "saturated" in kinds, outcomes
    assert all(value >= 1 for kind, value, _ in outcomes if kind == "saturated")  # Retry-After seconds


def test_a_request_past_its_deadline_is_not_scored(web):
    before = shared("rerank_worker_requests", outcome="expired")
    result = current_app.send_task("reranker.tasks.rerank", args=[QUERY, long_passages(5), ""],
                                   kwargs={"deadline": time.time() - 1}, queue=SEARCH_RERANK_QUEUE)
    payload = result.get(timeout=60)
    assert payload["stopped"] == "expired" and payload["logits"] == [] and payload["offered"] == 5
    assert shared("rerank_worker_requests", outcome="expired") == before + 1


def test_a_request_with_little_time_left_is_cut_to_what_fits(web):
    from reranker.speed import read_speed

    speed = read_speed(build_reranker())
    assert speed, "the worker's warm-up measured its speed"
    # Time for about a quarter of the pairs (at the measured speed), plus the trip to the worker.
    pairs = 40
    deadline = time.time() + 0.25 + pairs / speed / 4
    result = current_app.send_task("reranker.tasks.rerank", args=[QUERY, long_passages(pairs), ""],
                                   kwargs={"deadline": deadline}, queue=SEARCH_RERANK_QUEUE)
    payload = result.get(timeout=60)
    assert payload["stopped"] in ("deadline", "expired"), payload
    assert len(payload["logits"]) < pairs


def test_past_the_bound_searches_get_503_at_once(web):
    def search(i: int):
        path = "/api/search" if i % 3 else "/"
        started = time.perf_counter()
        status, headers, body = web.get(path, {"q": f"{QUERY} {i}", "collection": "shed"})
        return path, status, headers, body, time.perf_counter() - started

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(search, range(8)))
    statuses = [status for _, status, _, _, _ in answers]
    assert 200 in statuses and 503 in statuses, statuses
    for path, status, headers, body, seconds in answers:
        if status != 503:
            continue
        assert headers["Retry-After"] == "2" and seconds < 1.0, (headers, seconds)
        if path == "/api/search":
            assert headers["Content-Type"] == "application/json" and b"the search is busy" in body
        else:
            assert headers["Content-Type"].startswith("text/html") and b"The search is busy" in body
