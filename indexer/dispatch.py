"""Hand documents to the indexing workers once the database transaction has committed.

Tasks get batches of primary keys, never model instances: the worker reads the current row,
so a message that arrives late never writes stale text, and a message lost by Redis is found
again by `reconcile_index` from the statuses kept here.
"""
from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from .models import Document



def _batches(ids: list[int], size: int) -> Iterable[list[int]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def queue_for_indexing(document_ids: Iterable[int], batch_size: int | None = None,
                       build_id: int | None = None) -> int:
    """Mark documents queued and send them to the `embed` queue after commit.

    `build_id` sends them to that rebuild's index only (indexer/builds.py). `updated_at` is set
    by hand (`update()` skips auto_now): reconcile_index uses it to tell a message that is
    probably lost from one still waiting in the queue.
    """
    ids = sorted(set(document_ids))
    if not ids:
        return 0
    now = timezone.now()
    # In slices: one `pk IN (...)` over a whole corpus passes SQLite's limit on query
    # parameters (250,000 here; "too many SQL variables"). Each slice leaves room for the
    # UPDATE's own three values, since Django's SQLite figure, 999, is the old hard limit.
    for batch in _batches(ids, (connection.features.max_query_params or 10_000) - 3):
        Document.objects.filter(pk__in=batch).update(status=Document.Status.QUEUED, last_error="", updated_at=now)

    def send():
        from .tasks import index_documents

        for batch in _batches(ids, batch_size or settings.INDEX_BATCH_SIZE):
            index_documents.delay(batch, build_id=build_id)

    transaction.on_commit(send)
    return len(ids)


def queue_for_removal(document_ids: Iterable[int]) -> int:
    """Remove documents' chunks from the index (they stay in the database) after commit."""
    ids = sorted(set(document_ids))
    if not ids:
        return 0

    def send():
        from .tasks import remove_documents

        for batch in _batches(ids, settings.INDEX_BATCH_SIZE):
            remove_documents.delay(batch)

    transaction.on_commit(send)
    return len(ids)
