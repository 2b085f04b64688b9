"""Integration tests: the real Elasticsearch, Redis and Celery worker processes.

- Before any test runs, the services must answer, or the run stops at once (exit status 3) saying
  which one is down. Only when integration tests are selected to run: `pytest tests/unit` and
  `pytest --collect-only` never ask.
- A skipped integration test fails the run (exit status 1), naming each skipped test and why:
  `make test` proves every integration test ran. `ALLOW_SKIPS=1` allows skips (a developer
  running a subset on a machine that lacks something, e.g. PostgreSQL's server binaries).
- The service fixtures (`es`, `celery_workers`, `rerank_worker`, `train_worker`, `restore_elasticsearch`) live
  here, so a test outside this folder that asks for one fails with "fixture not found".
- One backend suite, every engine (as Haystack runs one document-store suite against each
  store): the tests marked `backend` exercise the engine (indexing, rebuild with alias swap,
  delete propagation, the three modes, filters, highlights, access control, the kill -9 drill)
  through indexer/store.py only. `make test` runs the whole suite on Elasticsearch, then the
  `backend` tests again with SEARCH_ENGINE=opensearch (read by this process's settings and by
  every worker process the tests start, which inherit the environment).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis
from django.conf import settings

from tests.support.searching import SEARCH_RERANK_QUEUE, build_reranker
from tests.support.services import services
from tests.support.workers import ROOT, Worker

# Node ids are relative to the rootdir, the project root (pytest.ini).
LAYER = Path(__file__).resolve().parent.relative_to(ROOT).as_posix() + "/"
_skipped: list[str] = []  # "node id: reason" of each integration test skipped in this run


def in_this_layer(nodeid: str) -> bool:
    return nodeid.startswith(LAYER)


def pytest_collection_finish(session):
    """The services must be up when any integration test is selected (to run, not only to list)."""
    if session.config.option.collectonly or not any(in_this_layer(item.nodeid) for item in session.items):
        return
    from indexer.store import get_store

    problems = []
    store = get_store()
    try:
        health = store.health(timeout=10)
        if not health.ok:
            problems.append(f"{store.engine} at {store.url}: cluster health is {health.status}")
    except Exception as exc:
        problems.append(f"{store.engine} at {store.url}: {exc}")
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        problems.append(f"Redis at {settings.REDIS_URL}: {exc}")
    if problems:
        pytest.exit("the integration tests need the real services; run `make test` (or `python3 "
                    "scripts/services.py start`) first, or only the unit tests (`make unit`):\n  "
                    + "\n  ".join(problems), returncode=3)


# --------------------------------------------------------------------------- no skips


def skips_allowed() -> bool:
    return os.environ.get("ALLOW_SKIPS", "") not in ("", "0")


def _note_skip(report) -> None:
    if report.skipped and in_this_layer(report.nodeid):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        _skipped.append(f"{report.nodeid}: {reason}")


def pytest_runtest_logreport(report):
    # An xfail outcome is a `skipped` report too, with `wasxfail`: not a skip.
    if not hasattr(report, "wasxfail"):
        _note_skip(report)


def pytest_collectreport(report):
    _note_skip(report)  # a whole module skipped at import


def pytest_sessionfinish(session, exitstatus):
    if _skipped and not skips_allowed() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if not _skipped:
        return
    if skips_allowed():
        terminalreporter.write_sep("=", f"{len(_skipped)} integration test(s) skipped (allowed by ALLOW_SKIPS)",
                                   yellow=True)
        return
    terminalreporter.write_sep("=", f"FAILED: {len(_skipped)} integration test(s) skipped", red=True)
    terminalreporter.write_line("Every integration test must run (set ALLOW_SKIPS=1 to allow skips):")
    for line in _skipped:
        terminalreporter.write_line(f"  {line}")


# --------------------------------------------------------------------------- service fixtures


@pytest.fixture(scope="session")
def es():
    """The client of the engine under test (SEARCH_ENGINE): Elasticsearch's, or OpenSearch's in
    the `backend` run. Tests call it only the ways both clients take (`body=`, `index=`/`id=`)."""
    from indexer.store import get_store

    store = get_store()
    yield store.client
    # Everything this run created starts with its own prefix.
    store.drop_indices([f"{settings.ELASTICSEARCH_INDEX_PREFIX}*"])


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


@pytest.fixture(scope="session")
def rerank_worker():
    """One `rerank` worker with the tests' cross-encoder (tests/support/searching.py) for the whole
    run, on a queue of its own; stopped when the session ends."""
    model = build_reranker()
    worker = Worker(SEARCH_RERANK_QUEUE, extra_env={"RERANKER_MODEL": model, "RERANK_QUEUE": SEARCH_RERANK_QUEUE})
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def train_worker(django_db_setup, django_db_blocker):
    """A worker of the `train` queue (relevance/run_tasks.py: the admin's evaluate and train runs)."""
    worker = Worker(settings.TRAIN_QUEUE).start()
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def restore_elasticsearch():
    """For tests that stop Elasticsearch: start it again whatever happens."""
    yield
    services("start", "es")
    from indexer.store import get_client

    get_client().cluster.health(wait_for_status="yellow", timeout="60s")
