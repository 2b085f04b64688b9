"""Make the index agree with the database again (the database is the source of truth).

Redis may lose queued messages (a flush, a restart without persistence, a worker killed while
holding them), and a worker may die between writing chunks and recording it. Reconciling one
collection compares every document's status and content hash with what the newest index of the
collection holds (the index being built, else the live one), and plans:

- documents `indexed` in the database but missing, stale or incomplete in the index: queue;
- documents `pending`, or `queued`/`indexing` for longer than `older_than` seconds (their
  message was probably lost): mark `indexed` when the index already holds exactly their
  current text, else queue again;
- `failed` documents: queue only with `retry_failed` (their error is kept otherwise);
- chunks of documents that are deleted or removed: delete;
- a build whose last message was lost: prepare (or finalize) it again.

`plan_collection` only reads; `apply` does the database and index part of a plan; queueing what
it says is indexer/tasks.py's (reconcile_collection). Queuing twice is harmless: chunk ids are
deterministic, so a second write overwrites.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .lookups import current_build, indexable_documents, live_build
from .models import Collection, Document, IndexBuild
from .statuses import mark_queued
from .store import get_store

log = logging.getLogger(__name__)


class BuildStep(StrEnum):
    PREPARE = "prepare"
    FINALIZE = "finalize"


@dataclass(frozen=True)
class AlreadyIndexed:
    """A document whose message was lost after the index got its current text."""

    document_id: int
    content_hash: str
    chunks: int


@dataclass
class ReconcilePlan:
    collection_id: int
    collection: str | None  # slug, for reports
    build_id: int | None = None  # the build in progress
    build_index: str | None = None
    resend: BuildStep | None = None  # the build's step whose message may be lost
    target_index: str | None = None  # the index compared with the database
    target_model: str = ""
    requeue: list[int] = field(default_factory=list)
    already_indexed: list[AlreadyIndexed] = field(default_factory=list)
    orphans: list[int] = field(default_factory=list)  # in the index, deleted or removed in the database

    @property
    def changes_anything(self) -> bool:
        return bool(self.requeue or self.already_indexed or self.orphans)


@dataclass(frozen=True)
class ReconcileReport:
    collection: str | None
    queued: int
    marked_indexed: int
    orphans: int
    orphans_deleted: int
    build: str | None  # index of the build in progress


def plan_collection(collection_id: int, older_than: float | None = None,
                    retry_failed: bool = False) -> ReconcilePlan:
    older_than = settings.RECONCILE_OLDER_THAN if older_than is None else older_than
    cutoff = timezone.now() - timedelta(seconds=older_than)
    plan = ReconcilePlan(collection_id,
                         Collection.objects.filter(pk=collection_id).values_list("slug", flat=True).first())
    build = current_build(collection_id)
    if build is not None:
        plan.build_id, plan.build_index = build.pk, build.index_name
        if build.progress_at and build.progress_at < cutoff:
            # Its prepare or finalize message may be lost; both steps are safe to run twice.
            if build.dims is None:
                plan.resend = BuildStep.PREPARE
            elif build.status == IndexBuild.Status.FINALIZING:
                plan.resend = BuildStep.FINALIZE
        if build.dims is None:
            return plan  # preparing the build queues every document
        target = build
    else:
        target = live_build(collection_id)
    inventory = {}
    if target is not None:
        plan.target_index, plan.target_model = target.index_name, target.model_id
        store = get_store()
        store.refresh(target.index_name)
        inventory = store.inventory(target.index_name)

    rows = indexable_documents(collection_id).values_list("pk", "content_hash", "chunk_count", "status", "updated_at")
    for pk, content_hash, chunk_count, status, updated_at in rows:
        found = inventory.pop(pk, None)
        complete = found is not None and found.holds(content_hash)
        if status == Document.Status.INDEXED:
            if not complete or found.chunks != chunk_count:
                plan.requeue.append(pk)
        elif status == Document.Status.FAILED:
            if retry_failed:
                plan.requeue.append(pk)
        elif status == Document.Status.PENDING or updated_at < cutoff:
            if complete:
                plan.already_indexed.append(AlreadyIndexed(pk, content_hash, found.chunks))
            else:
                plan.requeue.append(pk)
    plan.orphans = sorted(inventory)
    return plan


def report(plan: ReconcilePlan, orphans_deleted: int = 0) -> ReconcileReport:
    return ReconcileReport(collection=plan.collection, queued=len(plan.requeue),
                           marked_indexed=len(plan.already_indexed), orphans=len(plan.orphans),
                           orphans_deleted=orphans_deleted, build=plan.build_index)


def apply(plan: ReconcilePlan) -> ReconcileReport:
    """The database and index part of a plan: orphans deleted, documents marked indexed, the
    ones to index again marked queued (sending them is the caller's next step)."""
    deleted = get_store().remove_chunks(plan.target_index, plan.orphans) if plan.orphans else 0
    if plan.already_indexed:
        now = timezone.now()
        with transaction.atomic():
            for doc in plan.already_indexed:
                Document.objects.filter(pk=doc.document_id, content_hash=doc.content_hash).exclude(
                    status__in=[Document.Status.INDEXED, Document.Status.REMOVED]
                ).update(status=Document.Status.INDEXED, indexed_hash=doc.content_hash, chunk_count=doc.chunks,
                         indexed_model=plan.target_model, indexed_at=now, updated_at=now, last_error="")
    if plan.requeue:
        with transaction.atomic():
            mark_queued(plan.requeue)
    result = report(plan, deleted)
    if plan.changes_anything:
        log.info("reconciled %s: %s", plan.collection, result)
    return result
