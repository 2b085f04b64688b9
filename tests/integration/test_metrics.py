"""/metrics and /healthz through a real gunicorn (two processes, their metrics summed through
PROMETHEUS_MULTIPROC_DIR) and a real rerank worker, scraped by a real Prometheus (Debian's
`prometheus`, `make prometheus`) started here on a loopback port; the access rules of both."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from indexer.models import Collection
from tests.support.searching import SEARCH_RERANK_QUEUE, add_documents, build_reranker, drop_collections, index_now
from tests.support.web_server import Gunicorn, free_port

# No test holds a transaction open: the web server writes to the same SQLite file (the search
# log), and an open test transaction would keep its writes waiting for the lock.
pytestmark = pytest.mark.django_db(transaction=True)
METRICS_TOKEN = "metrics-token-for-the-test"
HEALTH_TOKEN = "health-token-for-the-test"
SEARCHES = 4


@pytest.fixture
def corpus(es, transactional_db):
    collection = Collection.objects.create(name="Metrics", slug="metrics", visibility=Collection.Visibility.PUBLIC)
    add_documents(collection, [(f"m{i}", f"Insulin study {i}", f"Insulin signalling and glucose uptake, part {i}.", {})
                               for i in range(5)])
    index_now(es, collection)
    yield collection
    drop_collections(es, collection)


@pytest.fixture(scope="module")
def web(django_db_setup, rerank_worker):
    # Only an address that is not this machine may scrape without the token: the test's own
    # requests (from 127.0.0.1) need it.
    server = Gunicorn("metrics", workers=2, threads=2, extra_env={
        "RERANK_QUEUE": SEARCH_RERANK_QUEUE, "RERANKER_MODEL": build_reranker(), "RERANK_TIMEOUT": "60",
        "METRICS_ALLOWED_ADDRESSES": "192.0.2.1", "METRICS_TOKEN": METRICS_TOKEN,
        "HEALTH_TOKEN": HEALTH_TOKEN}).start()
    try:
        yield server
    finally:
        server.stop()


def test_metrics_need_an_allowed_address_or_the_token(web):
    status, _, body = web.get("/metrics")
    assert status == 403 and b"METRICS_ALLOWED_ADDRESSES" in body
    assert web.get("/metrics", headers={"Authorization": "Bearer wrong"})[0] == 403
    status, headers, body = web.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert b"# TYPE celery_queue_length gauge" in body and b"# TYPE index_builds gauge" in body


def test_healthz_tells_strangers_the_status_only(web):
    status, _, body = web.get_json("/healthz")
    assert body == {"status": "ok" if status == 200 else "down"}
    status_token, _, details = web.get_json("/healthz", headers={"Authorization": f"Bearer {HEALTH_TOKEN}"})
    assert status_token == status and details["status"] == body["status"]
    assert "url" in details["checks"]["elasticsearch"] and "queues" in details["checks"]["workers"]
    assert web.get_json("/healthz", headers={"Authorization": "Bearer wrong"})[2] == body


def prometheus_query(port: int, expr: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


@pytest.fixture
def prometheus(web, tmp_path):
    binary = shutil.which("prometheus")
    assert binary, "Prometheus is missing: `make prometheus` (python3 scripts/services.py install prometheus)"
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: searchsite
    metrics_path: /metrics
    authorization:
      credentials: {METRICS_TOKEN}
    static_configs:
      - targets: ["127.0.0.1:{web.port}"]
""")
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text(errors="replace")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Prometheus was not ready in 60 s"
            time.sleep(0.5)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_prometheus_reads_the_rerank_histogram_back(web, corpus, prometheus):
    for i in range(SEARCHES):
        status, _, body = web.get_json("/api/search", {"q": f"insulin glucose {i}", "collection": "metrics",
                                                       "mode": "keyword"})
        assert status == 200 and body["rerank"]["applied"], body["rerank"]
    # Summed over both gunicorn processes, whichever answered each search.
    expr = 'sum(rerank_seconds_count{outcome="reranked"})'
    deadline = time.monotonic() + 60
    while True:
        result = prometheus_query(prometheus, expr)
        if result and float(result[0]["value"][1]) >= SEARCHES:
            break
        assert time.monotonic() < deadline, f"{expr} = {result} after 60 s"
        time.sleep(1)
    assert float(result[0]["value"][1]) == SEARCHES
    buckets = prometheus_query(prometheus, 'sum by (le) (rerank_seconds_bucket{outcome="reranked"})')
    by_bound = {series["metric"]["le"]: float(series["value"][1]) for series in buckets}
    assert by_bound["+Inf"] == SEARCHES and by_bound["0.005"] <= SEARCHES
    stages = prometheus_query(prometheus, 'sum by (stage) (search_stage_seconds_count{mode="keyword"})')
    assert {s["metric"]["stage"]: float(s["value"][1]) for s in stages} == {
        "engine": SEARCHES, "rerank": SEARCHES, "total": SEARCHES}
    pairs = prometheus_query(prometheus, "rerank_worker_pairs_total")
    assert pairs and float(pairs[0]["value"][1]) > 0
    speed = prometheus_query(prometheus, f'rerank_worker_pairs_per_second{{model="{build_reranker()}"}}')
    assert speed and float(speed[0]["value"][1]) > 0
