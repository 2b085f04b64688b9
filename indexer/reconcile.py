"""Make Elasticsearch agree with the database again (the database is the source of truth).

Redis may lose queued messages (a flush, a restart without persistence, a worker killed while
holding them), and a worker may die between writing chunks and recording it. Reconciling one
collection compares every document's status and content hash with what the newest index of the
collection holds (the index being built, else the live one) and:

- documents `indexed` in the database but missing, stale or incomplete in the index are queued;
- documents `pending`, or `queued`/`indexing` for longer than `older_than` seconds (their
  message was probably lost), are marked `indexed` when the index already holds exactly their
  current text, else queued again;
- `failed` documents are queued only with `retry_failed` (their error is kept otherwise);
- chunks of documents that are deleted or removed are deleted;
- a build whose last message was lost is finished (or prepared) again.

Queuing twice is harmless: chunk ids are deterministic, so a second write overwrites.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .builds import after_batch, current_build, index_inventory, indexable_documents, live_build
from .dispatch import queue_for_indexing
from .es import get_client
from .models import Collection, Document, IndexBuild

log = logging.getLogger(__name__)


def reconcile_collection(collection_id: int, older_than: float | None = None, retry_failed: bool = False,
                         dry_run: bool = False) -> dict:
    from .pipeline import remove_chunks

    older_than = settings.RECONCILE_OLDER_THAN if older_than is None else older_than
    cutoff = timezone.now() - timedelta(seconds=older_than)
    report = {"collection": Collection.objects.filter(pk=collection_id).values_list("slug", flat=True).first(),
              "queued": 0, "marked_indexed": 0, "orphans_deleted": 0, "build": None}
    build = current_build(collection_id)
    if build is not None:
        report["build"] = build.index_name
        if build.progress_at and build.progress_at < cutoff and not dry_run:
            # Its prepare or finalize message may be lost; both tasks are safe to run twice.
            from .tasks import finalize_build, prepare_build

            if build.dims is None:
                prepare_build.delay(build.pk)
            elif build.status == IndexBuild.Status.FINALIZING:
                finalize_build.delay(build.pk)
        if build.dims is None:
            return report  # prepare_build queues every document itself
        target = build
    else:
        target = live_build(collection_id)
    inventory: dict[int, dict] = {}
    if target is not None:
        get_client().indices.refresh(index=target.index_name)
        inventory = index_inventory(target.index_name)

    requeue: list[int] = []
    now_indexed: list[tuple[int, str, int]] = []
    rows = indexable_documents(collection_id).values_list("pk", "content_hash", "chunk_count", "status", "updated_at")
    for pk, content_hash, chunk_count, status, updated_at in rows:
        found = inventory.pop(pk, None)
        complete = (found is not None and found["hashes"] == {content_hash}
                    and found["chunks"] == found["max_chunk"] + 1)
        if status == Document.Status.INDEXED:
            if not complete or found["chunks"] != chunk_count:
                requeue.append(pk)
        elif status == Document.Status.FAILED:
            if retry_failed:
                requeue.append(pk)
        elif status == Document.Status.PENDING or updated_at < cutoff:
            if complete:
                now_indexed.append((pk, content_hash, found["chunks"]))
            else:
                requeue.append(pk)
    orphans = sorted(inventory)  # in the index, but deleted or removed in the database
    report.update(queued=len(requeue), marked_indexed=len(now_indexed), orphans=len(orphans))
    if dry_run:
        return report
    if orphans:
        report["orphans_deleted"] = remove_chunks(target.index_name, orphans)
    if now_indexed:
        now = timezone.now()
        with transaction.atomic():
            for pk, content_hash, chunks in now_indexed:
                Document.objects.filter(pk=pk, content_hash=content_hash).exclude(
                    status__in=[Document.Status.INDEXED, Document.Status.REMOVED]
                ).update(status=Document.Status.INDEXED, indexed_hash=content_hash, chunk_count=chunks,
                         indexed_model=target.model_id, indexed_at=now, updated_at=now, last_error="")
    if requeue:
        with transaction.atomic():
            queue_for_indexing(requeue, build_id=build.pk if build is not None else None)
    if build is not None:
        after_batch(collection_id)
    if requeue or now_indexed or orphans:
        log.info("reconciled %s: %s", report["collection"], report)
    return report


def reconcile_all(older_than: float | None = None, retry_failed: bool = False, dry_run: bool = False) -> list[dict]:
    return [reconcile_collection(pk, older_than, retry_failed, dry_run)
            for pk in Collection.objects.order_by("pk").values_list("pk", flat=True)]
