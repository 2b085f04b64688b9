"""Document status transitions shared by the stages (what the admin shows and what reconcile
reads back: the database is the source of truth for what should be in the index)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from django.db import connection, transaction
from django.utils import timezone

from .models import Document


def batches(ids: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def mark_queued(document_ids: Iterable[int]) -> list[int]:
    """Mark documents `queued` (their error cleared); returns their sorted, distinct ids.

    `updated_at` is set by hand (`update()` skips auto_now): reconcile uses it to tell a message
    that is probably lost from one still waiting in the queue.
    """
    ids = sorted(set(document_ids))
    now = timezone.now()
    # In slices: one `pk IN (...)` over a whole corpus passes SQLite's limit on query parameters
    # (docs/indexing.md). Each slice leaves room for the UPDATE's own three values.
    for batch in batches(ids, (connection.features.max_query_params or 10_000) - 3):
        Document.objects.filter(pk__in=batch).update(status=Document.Status.QUEUED, last_error="", updated_at=now)
    return ids


def mark_failed(document_ids: list[int], error: str) -> int:
    """After the last retry: the documents are `failed`, with the error text for the admin."""
    with transaction.atomic():
        return Document.objects.filter(pk__in=document_ids).exclude(
            status__in=[Document.Status.REMOVED, Document.Status.INDEXED]
        ).update(status=Document.Status.FAILED, last_error=error[:5000], updated_at=timezone.now())
