"""The real services under the project: Elasticsearch, Redis, Celery workers, /healthz."""
import os
import re
import subprocess
import sys

import pytest
import yaml
from django.conf import settings
from django.test import override_settings

from tests.conftest import services
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
def test_healthz_all_ok(client, celery_workers):
    response = client.get("/healthz")
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
def test_healthz_reports_missing_workers_and_redis(client, celery_workers):
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
def test_healthz_names_elasticsearch_when_it_is_stopped(client, restore_elasticsearch):
    services("stop", "es")
    response = client.get("/healthz")
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


def _services(tmp_path, code: str) -> subprocess.CompletedProcess:
    """Run `code` against scripts/services.py with its state and runtime folders in tmp_path."""
    env = dict(os.environ, SERVICES_DIR=str(tmp_path / "checkout-services"),
               ES_RUNTIME_DIR=str(tmp_path / "runtime"))
    script = f"import sys; sys.path.insert(0, {str(ROOT / 'scripts')!r}); import services\n{code}"
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)


def test_fresh_checkout_reuses_the_password_kept_with_old_data(tmp_path):
    # As root the data outlives the checkout; a fresh clone at the same path must open it
    # (CI once failed on a steady 401 here).
    runtime = tmp_path / "runtime"
    (runtime / "es-data").mkdir(parents=True)
    (runtime / "elastic-password").write_text("the-old-password\n")
    result = _services(tmp_path, "print(services.es_password())")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("the-old-password")
    assert (tmp_path / "checkout-services" / "elastic-password").read_text().strip() == "the-old-password"


def test_data_set_up_with_another_password_is_moved_aside_not_deleted(tmp_path):
    runtime = tmp_path / "runtime"
    (runtime / "es-data").mkdir(parents=True)
    (runtime / "es-data" / "segment").write_text("old data")
    (runtime / "elastic-password").write_text("the-old-password\n")
    (tmp_path / "checkout-services").mkdir()
    (tmp_path / "checkout-services" / "elastic-password").write_text("a-new-password\n")
    result = _services(tmp_path, "services.match_runtime_password()")
    assert result.returncode == 0, result.stderr
    assert "set up with another password" in result.stdout
    [previous] = runtime.glob("es-data.previous-*")
    assert (previous / "segment").read_text() == "old data"
    assert not (runtime / "es-data").exists()
    assert (runtime / "elastic-password").read_text().strip() == "a-new-password"
    assert (runtime / "elastic-password").stat().st_mode & 0o777 == 0o600


def test_an_empty_password_copy_is_unknown_not_a_mismatch(tmp_path):
    runtime = tmp_path / "runtime"
    (runtime / "es-data").mkdir(parents=True)
    (runtime / "elastic-password").write_text("")
    (tmp_path / "checkout-services").mkdir()
    (tmp_path / "checkout-services" / "elastic-password").write_text("the-password\n")
    result = _services(tmp_path, "services.match_runtime_password()")
    assert result.returncode == 0, result.stderr
    assert (runtime / "es-data").exists() and not list(runtime.glob("es-data.previous-*"))
    assert (runtime / "elastic-password").read_text().strip() == "the-password"


def _settings_variables() -> set[str]:
    source = (ROOT / "searchsite" / "settings.py").read_text()
    return set(re.findall(r'env(?:_bool|_int|_float|_choice)?\("([A-Z0-9_]+)"', source))


def test_docker_compose_matches_settings():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services_ = compose["services"]
    assert {"elasticsearch", "redis", "postgres", "web", "worker-embed", "worker-rerank", "beat"} <= set(services_)
    # The periodic reconcile runs from the same Celery app as the Procfile's beat.
    assert services_["beat"]["command"].startswith("celery -A searchsite beat")
    assert services_["elasticsearch"]["image"].startswith("docker.elastic.co/elasticsearch/elasticsearch:9.")
    devices = services_["worker-embed"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    known = _settings_variables()
    for name in ("web", "worker-embed", "worker-rerank", "beat"):
        env = services_[name]["environment"]
        names = set(env) if isinstance(env, dict) else {item.split("=", 1)[0] for item in env}
        assert {"DATABASE_URL", "ELASTICSEARCH_URL", "ELASTICSEARCH_PASSWORD", "REDIS_URL"} <= names
        unknown = names - known - {"HF_HUB_OFFLINE", "DJANGO_SETTINGS_MODULE"}
        assert not unknown, f"{name} sets variables the settings never read: {unknown}"
    example = [line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")]
    assert set(example) - known - {"POSTGRES_PASSWORD", "HF_HUB_OFFLINE"} == set()


def test_bad_settings_values_fail_clearly():
    env = dict(os.environ, EMBEDDING_BATCH_SIZE="many")
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "EMBEDDING_BATCH_SIZE must be an integer, not 'many'" in result.stderr
