"""Indexing survives failures: a killed worker, Elasticsearch down, Redis losing its queues, a
model change under live searches. Real worker processes, Elasticsearch and Redis throughout.

Tests marked `disruptive` kill the embed worker or stop the shared Elasticsearch; run them alone
(`pytest tests/integration/test_failures.py -m disruptive`).
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import redis
from django.conf import settings

from indexer.embedding import load_embedding_model, resolve_model_path
from indexer.models import Collection, Document, IndexBuild
from indexer.store import alias_name
from indexer.tasks import index_documents, start_build
from tests.support.services import services
from tests.support.indexing import (TUNED, all_indexed, assert_build_live_and_exact, index_all, make_collection,
                                     statuses, wait_for)
from tests.support.workers import ROOT, Worker, worker_env

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def tuned_worker(celery_workers):
    """The session's embed worker, restarted with TUNED for this module and restored after it."""
    worker = celery_workers[settings.EMBED_QUEUE]
    original = worker.extra_env
    worker.stop()
    worker.extra_env = dict(original, **TUNED)
    worker.start()
    yield worker
    worker.stop()
    worker.extra_env = original
    worker.start()


@pytest.fixture
def embed_worker(tuned_worker):
    yield tuned_worker
    if tuned_worker.proc.poll() is not None:  # a test killed it and failed before restarting it
        tuned_worker.start()


def build_of(collection: Collection) -> IndexBuild:
    return IndexBuild.objects.filter(collection=collection).order_by("-created_at").first()


def start_rebuild_and_wait_for_progress(collection: Collection, done: int, **kwargs) -> IndexBuild:
    index_all(collection)
    wait_for(lambda: all_indexed(collection), what="first index")
    build = start_build(collection, **kwargs)
    wait_for(lambda: IndexBuild.objects.get(pk=build.pk).done_documents >= done, interval=0.05,
             what=f"{done} documents into the build")
    build.refresh_from_db()
    assert build.in_progress, "the build finished before the failure could hit it; make it bigger"
    return build


@pytest.mark.backend
def test_transient_errors_end_failed_after_the_last_retry():
    """The engine unreachable for good: the batch is retried, then its documents are failed
    with the error text (a worker of its own, on its own queue, pointed at a closed port)."""
    collection = make_collection("fail-retries", 3)
    queue = f"{settings.EMBED_QUEUE}-unreachable"
    worker = Worker(queue, extra_env={
        "ELASTICSEARCH_URL": "http://127.0.0.1:9", "OPENSEARCH_URL": "http://127.0.0.1:9", "EMBED_QUEUE": queue, "INDEX_MAX_RETRIES": "2",
        "INDEX_RETRY_BACKOFF": "1", "INDEX_RETRY_BACKOFF_MAX": "2",
    }).start()
    try:
        ids = list(collection.documents.values_list("pk", flat=True))
        Document.objects.filter(pk__in=ids).update(status=Document.Status.QUEUED)
        index_documents.apply_async(args=[ids], queue=queue)
        wait_for(lambda: statuses(collection) == {"failed": 3}, timeout=120,
                 what=f"failed, now {statuses(collection)}")
    finally:
        worker.stop()
    errors = set(collection.documents.values_list("last_error", flat=True))
    assert len(errors) == 1 and errors.pop().startswith("ConnectionError")
    assert worker.log_path.read_text(errors="replace").count("Retry in") == 2


def test_redis_flush_during_build_then_reconcile(es, embed_worker):
    """Every key of this run's Redis prefix deleted in the middle of a build (queued messages
    lost); reconcile_index finds the stuck documents and the build completes exactly."""
    collection = make_collection("fail-flush", 45)
    build = start_rebuild_and_wait_for_progress(collection, done=3)
    client = redis.Redis.from_url(settings.REDIS_URL)
    prefix = settings.CELERY_KEY_PREFIX
    assert prefix.startswith("test-")  # never anybody else's keys
    deleted = 0
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        deleted += client.delete(key)
    assert deleted
    # With its messages gone the build cannot finish by itself.
    time.sleep(8)
    build.refresh_from_db()
    assert build.in_progress and Document.objects.filter(
        collection=collection, status=Document.Status.QUEUED).exists()

    result = subprocess.run(
        [sys.executable, "manage.py", "reconcile_index", collection.slug, "--older-than", "0"],
        cwd=ROOT, env=worker_env(TUNED), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"build {build.index_name} in progress" in result.stdout
    assert_build_live_and_exact(es, collection, build)


@pytest.fixture(scope="session")
def second_model(tmp_path_factory) -> str:
    """Another bi-encoder, built here (nothing can be downloaded): the packaged MiniLM cut to
    its first 3 layers. Same 384 dimensions, different vectors, a different model id (its path)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_model_path(settings.EMBEDDING_MODEL), device="cpu")
    bert = model[0].auto_model
    bert.encoder.layer = bert.encoder.layer[:3]
    bert.config.num_hidden_layers = 3
    path = tmp_path_factory.mktemp("models") / "minilm-l3"
    model.save(str(path))
    return str(path)


def test_rebuild_with_second_model_while_searching(es, embed_worker, second_model):
    collection = make_collection("fail-model-swap", 24)
    index_all(collection)
    wait_for(lambda: all_indexed(collection), what="first index")
    alias = alias_name(collection.slug)
    es.indices.refresh(index=alias)  # `indexed` means searchable after the next refresh
    queries = ["gene mutation therapy", "insulin glucose", "immune antibody virus"]
    searches, failures = [], []
    stop = threading.Event()

    def search_continuously():
        i = 0
        while not stop.is_set():
            query = queries[i % len(queries)]
            i += 1
            try:
                # Embed with the model the alias serves right now, as the search side does.
                mapping = es.indices.get_mapping(index=alias)
                model_id = next(iter(mapping.values()))["mappings"]["_meta"]["embedding_model"]
                vector = load_embedding_model(model_id).encode_queries([query])[0].tolist()
                knn = es.search(index=alias, knn={"field": "embedding", "query_vector": vector, "k": 5,
                                                  "num_candidates": 50}, size=5)["hits"]["hits"]
                bm25 = es.search(index=alias, query={"match": {"text": query}}, size=5)["hits"]["hits"]
                if len(knn) != 5 or not bm25:
                    failures.append(f"{query} ({model_id}): {len(knn)} kNN hits, {len(bm25)} BM25 hits")
                searches.append(model_id)
            except Exception as exc:  # any error is a failed search
                failures.append(f"{query}: {type(exc).__name__}: {exc}")

    load_embedding_model(second_model)  # load before the clock starts
    searcher = threading.Thread(target=search_continuously, daemon=True)
    searcher.start()
    try:
        build = start_build(collection, model_id=second_model)
        assert_build_live_and_exact(es, collection, build, model_id=second_model)
        time.sleep(1)  # a few searches on the new index too
    finally:
        stop.set()
        searcher.join(30)
    assert failures == []
    assert settings.EMBEDDING_MODEL in searches and second_model in searches
    assert searches.index(second_model) > 5  # searches kept going during the build
    meta = es.indices.get_mapping(index=alias)[build.index_name]["mappings"]["_meta"]
    assert meta["embedding_model"] == second_model == build.model_id
    collection.refresh_from_db()
    assert collection.embedding_model == second_model
    assert set(collection.documents.values_list("indexed_model", flat=True)) == {second_model}


@pytest.mark.backend
@pytest.mark.disruptive
def test_kill_embed_worker_mid_build(es, embed_worker):
    collection = make_collection("fail-kill", 45)
    build = start_rebuild_and_wait_for_progress(collection, done=6)
    embed_worker.kill()  # kill -9 of the worker and its pool processes
    build.refresh_from_db()
    assert build.in_progress and build.done_documents < build.total_documents
    embed_worker.start()
    assert_build_live_and_exact(es, collection, build)
    assert not collection.documents.filter(status=Document.Status.INDEXING).exists()


@pytest.mark.disruptive
def test_elasticsearch_stopped_during_build(es, embed_worker, restore_elasticsearch):
    collection = make_collection("fail-es-down", 45)
    build = start_rebuild_and_wait_for_progress(collection, done=3)
    services("stop", "es")
    time.sleep(5)  # tasks meet a dead cluster and back off
    services("start", "es")
    es.cluster.health(wait_for_status="yellow", timeout="60s")
    assert_build_live_and_exact(es, collection, build)
    assert not collection.documents.exclude(status=Document.Status.INDEXED).exists()
