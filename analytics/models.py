"""The search log: one row per search the page or the API answered, and the clicks on its results.

No IP address is stored; a search carries an anonymous session id at most
(analytics/search_log.py). Rows older than SEARCH_LOG_DAYS are deleted by a periodic task
(analytics/tasks.py).
"""
from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from indexer.models import Collection, Document
from search.query_text import QUERY_MAX_LENGTH


class Channel(models.TextChoices):
    PAGE = "page", "Search page"
    API = "api", "API"


class SearchLog(models.Model):
    # A random id, not a counter: a client posting clicks names its own search and cannot
    # guess anyone else's.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    query = models.CharField(max_length=QUERY_MAX_LENGTH, help_text="Normalised (search/query_text.py).")
    mode = models.CharField(max_length=20)
    collections = models.ManyToManyField(Collection, related_name="+", help_text="The collections searched.")
    page = models.PositiveSmallIntegerField(default=1)
    result_count = models.PositiveIntegerField(help_text="Results in the whole list, every page.")
    reranked = models.BooleanField()
    latency_ms = models.FloatField()
    session = models.CharField(max_length=64, blank=True, help_text="Anonymous session id; empty when unknown.")
    # The documents shown on this page in rank order; shown[0] has rank first_rank. A click names
    # a rank or a document, and the click model reads which results were passed over.
    first_rank = models.PositiveIntegerField(default=1)
    shown = models.JSONField(default=list)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "search"
        verbose_name_plural = "searches"

    def __str__(self) -> str:
        return f"{self.query[:60]!r} ({self.mode}, {self.created_at:%Y-%m-%d %H:%M})"

    def rank_of(self, document_id: int) -> int | None:
        try:
            return self.first_rank + self.shown.index(document_id)
        except ValueError:
            return None

    def document_at(self, rank: int) -> int | None:
        index = rank - self.first_rank
        return self.shown[index] if 0 <= index < len(self.shown) else None


class SearchClick(models.Model):
    search = models.ForeignKey(SearchLog, on_delete=models.CASCADE, related_name="clicks")
    rank = models.PositiveIntegerField()
    document = models.ForeignKey(Document, null=True, on_delete=models.SET_NULL, related_name="+")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["search", "rank"]
        verbose_name = "click"

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.search_id}"
