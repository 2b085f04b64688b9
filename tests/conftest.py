from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis
from django.conf import settings

from tests.support.searching import rerank_worker  # noqa: F401  (one session fixture for all modules)
from tests.support.workers import ROOT, Worker


def services(*args: str) -> None:
    """Drive the project's own service script (stop/start Elasticsearch or Redis)."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "services.py"), *args], check=True)


def pytest_collection_finish(session):
    """The services must be up, unless every selected test is marked `no_services`."""
    if session.items and all(item.get_closest_marker("no_services") for item in session.items):
        return
    from indexer.es import get_client

    problems = []
    try:
        get_client().cluster.health(wait_for_status="yellow", timeout="10s")
    except Exception as exc:
        problems.append(f"Elasticsearch at {settings.ELASTICSEARCH_URL}: {exc}")
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        problems.append(f"Redis at {settings.REDIS_URL}: {exc}")
    if problems:
        pytest.exit("the tests need the real services; run `make test` (or `python3 scripts/services.py "
                    "start`) first:\n  " + "\n  ".join(problems), returncode=3)


@pytest.fixture(scope="session")
def es():
    from indexer.es import get_client

    client = get_client()
    yield client
    # Everything this run created starts with its own prefix.
    client.options(ignore_status=404).indices.delete(
        index=f"{settings.ELASTICSEARCH_INDEX_PREFIX}*", expand_wildcards="all"
    )


@pytest.fixture(scope="session")
def celery_workers(django_db_setup, django_db_blocker):
    """One real worker process per queue, sharing the test database file."""
    workers = {}
    try:
        for queue in (settings.EMBED_QUEUE, settings.RERANK_QUEUE):
            workers[queue] = Worker(queue).start()
        yield workers
    finally:
        for worker in workers.values():
            worker.stop()


@pytest.fixture
def restore_elasticsearch():
    """For tests that stop Elasticsearch: start it again whatever happens."""
    yield
    services("start", "es")
    from indexer.es import get_client

    get_client().cluster.health(wait_for_status="yellow", timeout="60s")
