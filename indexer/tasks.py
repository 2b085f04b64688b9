"""Tasks of the `embed` queue, and the one module that queues indexing work: the rest of the
indexer (pipeline.py, builds.py, reconcile.py) does one step and returns what should happen
next; here each step is queued after the one before. Read top to bottom: documents queued,
indexed in batches; a build started, prepared, filled, finalized (or failed); reconciling.

Tasks take primary keys (never model instances): the worker reads the current row, so a message
that arrives late never writes stale text, and a message lost by Redis is found again by the
reconcile from the statuses kept in the database. Work is sent once the database transaction
that asked for it has committed.

Delivery is at least once: a message is acknowledged only after its task returns (`acks_late`),
and one whose worker died is handed out again (`reject_on_worker_lost`, or Redis's visibility
timeout when the whole worker was killed). Every task is safe to run twice. Errors that go away
by themselves are retried with exponential backoff and jitter; after the last retry (or at once
for any other error) the documents of the batch become `failed` with the error text.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings
from django.db import OperationalError, close_old_connections, transaction

from common.service_metrics import count_shared

from . import builds, pipeline, reconcile
from .models import Collection, Document, IndexBuild
from .statuses import batches, mark_failed, mark_queued
from .store import get_store

log = logging.getLogger(__name__)

RETRYABLE = (*get_store().transient_errors, OperationalError)


def error_text(exc: BaseException, task: Task | None = None) -> str:
    """`Type: message` of a task's exception, for the admin (Celery may hand on_failure a
    JSON-safe wrapper of it; unwrap that first)."""
    restore = getattr(exc, "restore", None)
    if callable(restore):
        try:
            exc = restore()
        except Exception:
            pass
    if task is not None and isinstance(exc, (SoftTimeLimitExceeded, TimeLimitExceeded)):
        # The worker's timer raises these without a message: say which limit ran out, and where
        # it is set (settings.TASK_TIME_LIMIT_KINDS).
        soft = isinstance(exc, SoftTimeLimitExceeded)
        # The limit in force came with the message (the sender's settings); the task's own if none.
        if soft:
            seconds = ((getattr(task.request, "timelimit", None) or (None, None))[1]) or task.soft_time_limit
        else:
            seconds = exc.args[0] if exc.args else task.time_limit
        setting = next((name for name, (_, tasks) in settings.TASK_TIME_LIMIT_KINDS.items() if task.name in tasks),
                       "CELERY_TASK_ANNOTATIONS")
        grace = "" if soft else " + TASK_HARD_TIME_LIMIT_GRACE"
        return (f"{type(exc).__name__}: {task.name} ran past its {'soft' if soft else 'hard'} time limit of "
                f"{seconds:g} s ({setting}{grace})")
    return f"{type(exc).__name__}: {exc}"


def task_report(result) -> dict:
    """A step's result as its task's return value (JSON, kept by the result backend), without
    the fields marked not to be reported (id lists as long as a corpus)."""
    return {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.metadata.get("report", True)}


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
        message = error_text(exc, self)
        failed = mark_failed(list(ids), message)
        count_shared("indexing_documents", failed, outcome="failed")
        log.error("%s gave up on %d documents: %s", self.name, failed, message)
        for collection_id in set(Document.objects.filter(pk__in=ids).values_list("collection_id", flat=True)):
            advance_build(collection_id)


class BuildTask(IndexingTask):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        build = IndexBuild.objects.filter(pk=args[0] if args else kwargs.get("build_id")).first()
        if build is not None and build.in_progress:
            builds.fail_build(build, error_text(exc, self))
            after_failed_build(build.collection_id)


@shared_task(name="indexer.tasks.ping", bind=True)
def ping(self) -> dict:
    """A round trip through an embed worker (health checks and tests)."""
    return {"queue": self.request.delivery_info.get("routing_key"), "worker": self.request.hostname}


# --------------------------------------------------------------------------- documents


def queue_for_indexing(document_ids: Iterable[int], batch_size: int | None = None,
                       build_id: int | None = None) -> int:
    """Mark documents queued and send them to the `embed` queue after commit; `build_id` sends
    them to that rebuild's index only."""
    ids = mark_queued(document_ids)
    send_for_indexing(ids, batch_size, build_id)
    return len(ids)


def send_for_indexing(document_ids: list[int], batch_size: int | None = None, build_id: int | None = None) -> None:
    """Send documents already marked queued, in batches, once the transaction commits."""
    if not document_ids:
        return

    def send():
        for batch in batches(document_ids, batch_size or settings.INDEX_BATCH_SIZE):
            index_documents.delay(batch, build_id=build_id)

    transaction.on_commit(send)


@shared_task(name="indexer.tasks.index_documents", base=DocumentBatchTask)
def index_documents(document_ids: list[int], build_id: int | None = None) -> dict:
    report = pipeline.index_documents(document_ids, build_id=build_id)
    count_shared("indexing_documents", report.indexed, outcome="indexed")
    count_shared("indexing_chunks", report.chunks)
    for collection_id in report.collection_ids:
        advance_build(collection_id)
    return task_report(report)


def queue_for_removal(document_ids: Iterable[int]) -> int:
    """Remove documents' chunks from the index (they stay in the database) after commit."""
    ids = sorted(set(document_ids))

    def send():
        for batch in batches(ids, settings.INDEX_BATCH_SIZE):
            remove_documents.delay(batch)

    if ids:
        transaction.on_commit(send)
    return len(ids)


@shared_task(name="indexer.tasks.remove_documents", base=IndexingTask)
def remove_documents(document_ids: list[int]) -> dict:
    return task_report(pipeline.remove_documents(document_ids))


def queue_chunk_deletion(collection_id: int, document_ids: list[int]) -> None:
    """Chunks of documents deleted from the database, after commit (a collection deleted with its
    documents drops whole indices instead)."""

    def send():
        if Collection.objects.filter(pk=collection_id).exists():
            remove_deleted_documents.delay(collection_id, document_ids)

    transaction.on_commit(send)


@shared_task(name="indexer.tasks.remove_deleted_documents", base=IndexingTask)
def remove_deleted_documents(collection_id: int, document_ids: list[int]) -> dict:
    return task_report(pipeline.remove_deleted_documents(collection_id, document_ids))


def queue_index_drop(index_names: list[str]) -> None:
    """Indices of a deleted collection, after commit."""
    if index_names:
        transaction.on_commit(lambda: drop_indices.delay(sorted(index_names)))


@shared_task(name="indexer.tasks.drop_indices", base=IndexingTask)
def drop_indices(index_names: list[str]) -> list[str]:
    get_store().drop_indices(index_names)
    return index_names


# --------------------------------------------------------------------------- builds


def start_build(collection: Collection, model_id: str | None = None, index_options: str | None = None,
                requested_by: str = "", language: str | None = None, shards: int | None = None,
                replicas: int | None = None) -> IndexBuild:
    """Record a build (BuildInProgress if one runs already) and prepare it after commit."""
    build = builds.start_build(collection, model_id=model_id, index_options=index_options,
                               requested_by=requested_by, language=language, shards=shards, replicas=replicas)
    transaction.on_commit(lambda: prepare_build.delay(build.pk))
    return build


@shared_task(name="indexer.tasks.prepare_build", base=BuildTask)
def prepare_build(build_id: int) -> dict:
    prepared = builds.prepare_build(build_id)
    if prepared.prepared:
        if prepared.document_ids:
            send_for_indexing(prepared.document_ids, build_id=build_id)
        else:
            advance_build(prepared.collection_id)  # nothing to index: finalize at once
    return task_report(prepared)


def advance_build(collection_id: int) -> None:
    """After a batch: the build's progress; its last batch hands it to finalize."""
    build_id = builds.after_batch(collection_id)
    if build_id is not None:
        transaction.on_commit(lambda: finalize_build.delay(build_id))


@shared_task(name="indexer.tasks.finalize_build", base=BuildTask)
def finalize_build(build_id: int) -> dict:
    finalized = builds.finalize_build(build_id)
    if finalized.outcome == builds.Finalized.REDO:
        send_for_indexing(finalized.redo_ids, build_id=build_id)
    elif finalized.outcome == builds.Finalized.FAILED:
        after_failed_build(finalized.collection_id)
    return task_report(finalized)


def after_failed_build(collection_id: int) -> None:
    """Document statuses followed the failed build's index: set them back to what the live
    index holds (queueing what it lacks)."""
    reconcile_collection(collection_id, older_than=0, retry_failed=False)


# --------------------------------------------------------------------------- reconcile


def reconcile_collection(collection_id: int, older_than: float | None = None, retry_failed: bool = False,
                         dry_run: bool = False) -> reconcile.ReconcileReport:
    """Plan (indexer/reconcile.py), then carry the plan out: resend a lost build step, fix the
    database and the index, queue what must be indexed again, move the build on."""
    plan = reconcile.plan_collection(collection_id, older_than, retry_failed)
    if dry_run:
        return reconcile.report(plan)
    if plan.resend == reconcile.BuildStep.PREPARE:
        prepare_build.delay(plan.build_id)
    elif plan.resend == reconcile.BuildStep.FINALIZE:
        finalize_build.delay(plan.build_id)
    result = reconcile.apply(plan)
    send_for_indexing(plan.requeue, build_id=plan.build_id)
    if plan.build_id is not None:
        advance_build(collection_id)
    return result


@shared_task(name="indexer.tasks.reconcile", base=IndexingTask)
def reconcile_index(older_than: float | None = None) -> list[dict]:
    """Periodic (celery beat, settings.CELERY_BEAT_SCHEDULE): re-queue what Redis lost."""
    return [task_report(reconcile_collection(pk, older_than=older_than))
            for pk in Collection.objects.order_by("pk").values_list("pk", flat=True)]
