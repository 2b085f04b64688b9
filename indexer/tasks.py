"""Tasks of the `embed` queue. Each takes primary keys (never model instances); the work itself
lives in indexer/pipeline.py, builds.py and reconcile.py.

Delivery is at least once: a message is acknowledged only after its task returns (`acks_late`),
and one whose worker died is handed out again (`reject_on_worker_lost`, or Redis's visibility
timeout when the whole worker was killed). Every task is safe to run twice. Errors that go away
by themselves are retried with exponential backoff and jitter; after the last retry (or at once
for any other error) the documents of the batch become `failed` with the error text.
"""
from __future__ import annotations

import logging

from celery import Task, shared_task
from django.conf import settings
from django.db import OperationalError, close_old_connections
from elasticsearch import ConnectionError as ESConnectionError
from elasticsearch import ConnectionTimeout

from . import builds, pipeline, reconcile

log = logging.getLogger(__name__)

RETRYABLE = (ESConnectionError, ConnectionTimeout, pipeline.TransientIndexError, OperationalError)


def error_text(exc: BaseException) -> str:
    """`Type: message` of a task's exception, for the admin (Celery may hand on_failure a
    JSON-safe wrapper of it; unwrap that first)."""
    restore = getattr(exc, "restore", None)
    if callable(restore):
        try:
            exc = restore()
        except Exception:
            pass
    return f"{type(exc).__name__}: {exc}"


class IndexingTask(Task):
    acks_late = True
    reject_on_worker_lost = True
    autoretry_for = RETRYABLE
    max_retries = settings.INDEX_MAX_RETRIES
    retry_backoff = settings.INDEX_RETRY_BACKOFF  # seconds, doubled at each retry
    retry_backoff_max = settings.INDEX_RETRY_BACKOFF_MAX
    retry_jitter = True

    def before_start(self, task_id, args, kwargs):
        close_old_connections()  # a database restarted since the last task: reconnect


class DocumentBatchTask(IndexingTask):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        ids = args[0] if args else kwargs.get("document_ids", [])
        message = error_text(exc)
        failed = pipeline.mark_failed(list(ids), message)
        log.error("%s gave up on %d documents: %s", self.name, failed, message)
        collection_ids = {c for c in pipeline.Document.objects.filter(pk__in=ids).values_list("collection_id", flat=True)}
        for collection_id in collection_ids:
            builds.after_batch(collection_id)


class BuildTask(IndexingTask):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        build = builds.IndexBuild.objects.filter(pk=args[0] if args else kwargs.get("build_id")).first()
        if build is not None and build.in_progress:
            builds.fail_build(build, error_text(exc))


@shared_task(name="indexer.tasks.ping", bind=True)
def ping(self) -> dict:
    """A round trip through an embed worker (health checks and tests)."""
    return {"queue": self.request.delivery_info.get("routing_key"), "worker": self.request.hostname}


@shared_task(name="indexer.tasks.index_documents", base=DocumentBatchTask)
def index_documents(document_ids: list[int], build_id: int | None = None) -> dict:
    return pipeline.index_documents(document_ids, build_id=build_id)


@shared_task(name="indexer.tasks.remove_documents", base=IndexingTask)
def remove_documents(document_ids: list[int]) -> dict:
    return pipeline.remove_documents(document_ids)


@shared_task(name="indexer.tasks.remove_deleted_documents", base=IndexingTask)
def remove_deleted_documents(collection_id: int, document_ids: list[int]) -> dict:
    return pipeline.remove_deleted_documents(collection_id, document_ids)


@shared_task(name="indexer.tasks.drop_indices", base=IndexingTask)
def drop_indices(index_names: list[str]) -> list[str]:
    return builds.drop_indices(index_names)


@shared_task(name="indexer.tasks.prepare_build", base=BuildTask)
def prepare_build(build_id: int) -> dict:
    return builds.prepare_build(build_id)


@shared_task(name="indexer.tasks.finalize_build", base=BuildTask)
def finalize_build(build_id: int) -> dict:
    return builds.finalize_build(build_id)


@shared_task(name="indexer.tasks.reconcile", base=IndexingTask)
def reconcile_index(older_than: float | None = None) -> list[dict]:
    """Periodic (celery beat, settings.CELERY_BEAT_SCHEDULE): re-queue what Redis lost."""
    return reconcile.reconcile_all(older_than=older_than)
