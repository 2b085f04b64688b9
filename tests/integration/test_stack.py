"""The real services under the project: Elasticsearch, Redis, Celery workers, /healthz."""
import subprocess
import sys

import pytest
from django.conf import settings
from django.test import override_settings

from tests.support.services import services
from tests.support.workers import ROOT


def test_dense_vector_knn_round_trip(es):
    index = f"{settings.ELASTICSEARCH_INDEX_PREFIX}-smoke"
    es.indices.create(
        index=index,
        mappings={
            "properties": {
                "text": {"type": "text"},
                "embedding": {"type": "dense_vector", "dims": 4, "similarity": "cosine",
                              "index_options": {"type": "hnsw"}},
            }
        },
    )
    try:
        docs = {"north": [0, 1, 0, 0], "east": [1, 0, 0, 0], "up": [0, 0, 1, 0]}
        for name, vector in docs.items():
            es.index(index=index, id=name, document={"text": name, "embedding": vector})
        es.indices.refresh(index=index)
        hits = es.search(
            index=index,
            knn={"field": "embedding", "query_vector": [0.9, 0.1, 0.05, 0], "k": 2, "num_candidates": 10},
        )["hits"]["hits"]
        assert [h["_id"] for h in hits] == ["east", "north"]
        assert hits[0]["_score"] > hits[1]["_score"]
    finally:
        es.indices.delete(index=index)
    assert not es.indices.exists(index=index)


def test_celery_round_trip_on_each_queue(celery_workers):
    from indexer.tasks import ping as embed_ping
    from reranker.tasks import ping as rerank_ping

    embed = embed_ping.delay().get(timeout=30)
    rerank = rerank_ping.delay().get(timeout=30)
    assert embed == {"queue": "embed", "worker": celery_workers["embed"].name}
    assert rerank == {"queue": "rerank", "worker": celery_workers["rerank"].name}


@pytest.mark.django_db
def test_healthz_all_ok(admin_client, client, celery_workers):
    # Strangers read the status alone; staff (and the health token: tests/integration/test_metrics.py) the details.
    assert client.get("/healthz").json() == {"status": "ok"}
    response = admin_client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok" and body["down"] == []
    checks = body["checks"]
    assert checks["elasticsearch"]["status"] in ("green", "yellow")
    assert checks["elasticsearch"]["version"].startswith("9.")
    assert checks["redis"]["ok"] and checks["database"]["ok"]
    assert celery_workers["embed"].name in checks["workers"]["queues"]["embed"]["workers"]
    assert celery_workers["rerank"].name in checks["workers"]["queues"]["rerank"]["workers"]


@pytest.mark.django_db
def test_healthz_reports_missing_workers_and_redis(admin_client, celery_workers):
    client = admin_client
    # A queue no worker consumes: it must be reported down by name, the other one stays ok.
    with override_settings(RERANK_QUEUE="rerank-nobody", HEALTH_TIMEOUT=0.5):
        response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 503
    assert body["down"] == ["workers"]
    assert body["checks"]["workers"]["queues"]["embed"]["ok"] is True
    assert body["checks"]["workers"]["error"] == "no worker answered a ping on queue 'rerank-nobody'"

    with override_settings(REDIS_URL="redis://127.0.0.1:1/0", HEALTH_TIMEOUT=0.5):
        response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 503
    assert set(body["down"]) == {"redis", "workers"}
    assert "Connection" in body["checks"]["redis"]["error"]


@pytest.mark.disruptive
@pytest.mark.django_db
def test_healthz_names_elasticsearch_when_it_is_stopped(admin_client, client, restore_elasticsearch):
    services("stop", "es")
    stranger = client.get("/healthz")
    assert stranger.status_code == 503 and stranger.json() == {"status": "down"}
    response = admin_client.get("/healthz")
    body = response.json()
    assert response.status_code == 503
    assert "elasticsearch" in body["down"]
    assert body["checks"]["elasticsearch"]["ok"] is False
    assert "Connection" in body["checks"]["elasticsearch"]["error"]
    assert "Traceback" not in response.content.decode()


def test_services_start_is_idempotent(es):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "services.py"), "start"],
                         capture_output=True, text=True, check=True).stdout
    assert "Elasticsearch already running" in out or "reusing it" in out
    assert "Redis already running" in out
