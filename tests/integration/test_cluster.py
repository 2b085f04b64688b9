"""Drills on a 3-node Elasticsearch cluster (issue 15): a data node stopped during a rebuild and
during a run of searches, Redis restarted during indexing. Real embed worker, real web views.

The module starts a cluster of its own on other ports (scripts/services.py, ES_NODES=3 from
ES_PORT 9211, small heaps) and a Redis of its own (REDIS_PORT 6391, its files in the run's temp
folder), and stops both at the end: the shared Elasticsearch and Redis are never touched. Builds
are started and repaired with `manage.py rebuild_index` / `reconcile_index` in processes that see
the same environment as the worker. Timing: docs/operating.md, "Elasticsearch as a cluster".
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings
from elasticsearch import Elasticsearch

from indexer.models import Collection, IndexBuild
from indexer.store import alias_name, get_client
from tests.support.indexing import TUNED, assert_build_live_and_exact, make_collection, statuses, wait_for
from tests.support.services import services
from tests.support.workers import ROOT, Worker, worker_env

# Not `disruptive`: the shared Elasticsearch and Redis are never touched.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

NODES = 3
ES_PORT = int(os.environ.get("TEST_CLUSTER_PORT", "9211"))
# Every port named: an ES_TRANSPORT_PORT in the environment (the single node's) must not reach the cluster.
CLUSTER = {"ES_NODES": str(NODES), "ES_PORT": str(ES_PORT), "ES_TRANSPORT_PORT": str(ES_PORT + 100),
           "ES_HEAP": os.environ.get("TEST_CLUSTER_HEAP", "256m")}
URLS = [f"http://127.0.0.1:{ES_PORT + i}" for i in range(NODES)]
REDIS_PORT = int(os.environ.get("TEST_REDIS_PORT", "6391"))
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"
# services.py keeps its pid and log files under SERVICES_DIR: the run's own, so `stop redis`
# can only ever stop this Redis.
OWN_REDIS = {"REDIS_PORT": str(REDIS_PORT), "SERVICES_DIR": str(Path(os.environ["SEARCHSITE_TEST_TMP"]) / "services")}
QUEUE = f"{settings.EMBED_QUEUE}-cluster"
# What the worker and the manage.py commands see: every node of the cluster, the Redis of our
# own, a queue of our own, and batches of 5 (a build of 300 documents is 60 messages).
ENV = {**TUNED, "INDEX_BATCH_SIZE": "5", "ELASTICSEARCH_URL": ",".join(URLS), "REDIS_URL": REDIS_URL,
       "CELERY_BROKER_URL": REDIS_URL, "CELERY_RESULT_BACKEND": REDIS_URL, "EMBED_QUEUE": QUEUE}


@pytest.fixture(scope="module")
def cluster():
    """A client of the 3-node cluster (started here unless it runs already), green at the start;
    this run's indices deleted and every node stopped at the end."""
    started = time.monotonic()
    services("start", "es", env=CLUSTER)
    client = Elasticsearch(URLS, basic_auth=(settings.ELASTICSEARCH_USERNAME, settings.ELASTICSEARCH_PASSWORD),
                           request_timeout=30)
    print(f"\n3-node cluster up in {time.monotonic() - started:.0f}s")
    try:
        yield client
    finally:
        # A drill that failed half-way may have left a node down: start it to delete our indices.
        services("start", "es", env=CLUSTER)
        client.options(ignore_status=404).indices.delete(index=f"{settings.ELASTICSEARCH_INDEX_PREFIX}*",
                                                         expand_wildcards="all")
        if os.environ.get("TEST_CLUSTER_KEEP", "") in ("", "0"):
            services("stop", "es", env=CLUSTER)  # TEST_CLUSTER_KEEP=1 leaves it up for the next run


@pytest.fixture(scope="module")
def own_redis():
    services("start", "redis", env=OWN_REDIS)
    try:
        yield redis.Redis.from_url(REDIS_URL)
    finally:
        services("stop", "redis", env=OWN_REDIS)


@pytest.fixture(scope="module")
def cluster_worker(cluster, own_redis, django_db_setup):
    worker = Worker(QUEUE, extra_env=ENV).start()
    try:
        yield worker
    finally:
        worker.stop()


def manage(*args: str) -> subprocess.CompletedProcess:
    """A manage.py command with the worker's environment (the test database, the cluster, our Redis)."""
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=worker_env(ENV),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def node_numbers(client: Elasticsearch) -> tuple[int, list[int]]:
    """(the elected master's number, the others'): node-i answers on ES_PORT+i-1."""
    nodes = client.cat.nodes(format="json", h="name,master")
    master = next(int(n["name"].removeprefix("node-")) for n in nodes if n["master"] == "*")
    return master, sorted(int(n["name"].removeprefix("node-")) for n in nodes if n["master"] != "*")


def wait_green(client: Elasticsearch) -> dict:
    health = client.options(request_timeout=200).cluster.health(wait_for_status="green",
                                                                wait_for_nodes=str(NODES), timeout="180s")
    assert health["status"] == "green" and health["number_of_nodes"] == NODES, health
    return health


def start_rebuild(collection: Collection, done: int) -> IndexBuild:
    """`rebuild_index --no-wait`, returning once `done` documents are in the new index."""
    manage("rebuild_index", collection.slug, "--no-wait")
    build = IndexBuild.objects.filter(collection=collection).order_by("-created_at").first()
    wait_for(lambda: IndexBuild.objects.get(pk=build.pk).done_documents >= done, interval=0.05, timeout=180,
             what=f"{done} documents into the build, statuses {statuses(collection)}")
    return build


def test_data_node_stopped_during_a_rebuild(cluster, cluster_worker):
    """Replicas 1: a node (not the elected master) stops in the middle of a build of 300 documents
    and comes back; the build goes live with every chunk, exactly, and the cluster turns green."""
    started = time.monotonic()
    collection = make_collection("cluster-rebuild", 300, long_every=25, shards=2, replicas=1)
    build = start_rebuild(collection, done=30)
    _, others = node_numbers(cluster)
    victim = others[-1]
    holders = {copy["node"] for copy in cluster.cat.shards(index=build.index_name, format="json")}
    assert f"node-{victim}" in holders  # 4 shard copies on 3 nodes: the node takes some with it
    services("stop", "es-node", str(victim), env=CLUSTER)
    build.refresh_from_db()
    assert build.in_progress and build.done_documents < build.total_documents, \
        "the build finished before the node stopped; make it bigger"
    assert cluster.cluster.health(wait_for_nodes=str(NODES - 1), timeout="30s")["number_of_nodes"] == NODES - 1
    total = assert_build_live_and_exact(cluster, collection, build)
    assert total > 300  # the long documents span several chunks
    index_settings = cluster.indices.get_settings(index=build.index_name)[build.index_name]["settings"]["index"]
    assert (index_settings["number_of_shards"], index_settings["number_of_replicas"]) == ("2", "1")
    assert (build.shards, build.replicas) == (2, 1)
    services("start", "es-node", str(victim), env=CLUSTER)
    wait_green(cluster)
    assert cluster.count(index=alias_name(collection.slug))["count"] == total
    print(f"\nrebuild drill: {time.monotonic() - started:.0f}s, {total} chunks")


def test_data_node_stopped_during_searches(cluster, cluster_worker, client, settings):
    """Searches through the web view while a node stops and comes back: every answer is 200
    (the replicas answer for the node that is gone) or a 503 that says why, never a 500."""
    started = time.monotonic()
    collection = make_collection("cluster-search", 40, long_every=10, shards=2, replicas=1, visibility="public")
    manage("rebuild_index", collection.slug)
    cluster.indices.refresh(index=alias_name(collection.slug))
    wait_green(cluster)
    queries = ["gene mutation therapy", "insulin glucose", "immune antibody virus", "kinase receptor"]
    settings.ELASTICSEARCH_URL = ",".join(URLS)  # the view's client: every node, like the worker's
    get_client.cache_clear()
    answers: list[tuple[str, int, dict]] = []
    phase = ["before"]

    def search(i: int) -> None:
        response = client.get("/api/search", {"q": queries[i % len(queries)], "collection": collection.slug,
                                              "mode": ("hybrid", "semantic", "keyword")[i % 3]})
        answers.append((phase[0], response.status_code, response.json()))

    def drill():
        _, others = node_numbers(cluster)
        phase[0] = "stopping"
        services("stop", "es-node", str(others[0]), env=CLUSTER)
        phase[0] = "down"
        time.sleep(5)
        phase[0] = "starting"
        services("start", "es-node", str(others[0]), env=CLUSTER)
        phase[0] = "back"

    try:
        for i in range(4):
            search(i)
        stopper = threading.Thread(target=drill, daemon=True)
        stopper.start()
        i = 0
        while stopper.is_alive():
            search(i)
            i += 1
        stopper.join()
        wait_green(cluster)
        for j in range(4):
            search(j)
    finally:
        get_client.cache_clear()  # the settings fixture restores the URL
    statuses_seen = [status for _, status, _ in answers]
    assert set(statuses_seen) <= {200, 503}, [(p, s, b) for p, s, b in answers if s not in (200, 503)]
    for _, status, body in answers:
        if status == 503:
            assert body["error"].startswith("search is unavailable right now: ")
        else:
            assert body["results"], body
    down = [status for phase_, status, _ in answers if phase_ == "down"]
    assert down and 200 in down, answers  # the cluster kept answering with a node gone
    assert all(status == 200 for phase_, status, _ in answers if phase_ in ("before", "back")), answers
    print(f"\nsearch drill: {time.monotonic() - started:.0f}s, {len(answers)} searches, "
          f"{statuses_seen.count(503)} answered 503")


def test_redis_restarted_during_indexing_then_reconcile(cluster, cluster_worker, own_redis):
    """The queues are lost with the Redis restart (no persistence); reconcile_index queues what
    was left and the build completes exactly."""
    started = time.monotonic()
    collection = make_collection("cluster-redis", 200, long_every=25, shards=2, replicas=1)
    build = start_rebuild(collection, done=10)
    services("stop", "redis", env=OWN_REDIS)
    services("start", "redis", env=OWN_REDIS)
    # With its messages gone the build cannot finish by itself.
    time.sleep(5)
    build.refresh_from_db()
    assert build.in_progress and build.done_documents < build.total_documents
    result = manage("reconcile_index", collection.slug, "--older-than", "0")
    assert f"build {build.index_name} in progress" in result.stdout
    assert_build_live_and_exact(cluster, collection, build)
    print(f"\nRedis drill: {time.monotonic() - started:.0f}s")
