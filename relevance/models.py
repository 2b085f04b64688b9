"""Relevance judgments: which documents of a collection answer which query, and how well.

A judgment is the unit both evaluation (reranker/metrics.py, `evaluate`) and training
(reranker/training.py, `train_reranker`) read. They come from imported qrels (BEIR format,
relevance/judgments.py) or from staff marking search results relevant or not (relevance/views.py).
"""
from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import models

from indexer.models import Collection, Document
from search.query_text import QUERY_MAX_LENGTH, normalize_query

__all__ = ["MAX_GRADE", "QUERY_MAX_LENGTH", "IMPLICIT_MAX_GRADE", "ImplicitJudgment", "Judgment", "RerankerRun",
           "normalize_query"]

# Graded relevance as in TREC/BEIR qrels: 0 = not relevant, 1 = relevant, higher = more relevant.
MAX_GRADE = 3
# Clicks imply 0, 1 or 2 at most; the top grade stays a staff judgment.
IMPLICIT_MAX_GRADE = 2


class Judgment(models.Model):
    class Source(models.TextChoices):
        IMPORT = "import", "Imported qrels"
        SEARCH = "search", "Marked on the search page"
        ADMIN = "admin", "Entered in the admin"

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="judgments")
    query = models.CharField(max_length=QUERY_MAX_LENGTH)
    query_id = models.CharField(
        max_length=255, blank=True,
        help_text="The query's id in imported qrels (kept so that an export gives the same ids back).",
    )
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="judgments")
    grade = models.PositiveSmallIntegerField(
        validators=[MaxValueValidator(MAX_GRADE)],
        help_text=f"0 = not relevant, 1 = relevant, up to {MAX_GRADE} = highly relevant.",
    )
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.ADMIN)
    judged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["collection", "query", "-grade"]
        constraints = [
            models.UniqueConstraint(fields=["collection", "query", "document"], name="unique_judgment_per_query_document"),
        ]
        # The name the index was created with (in the reranker app, before the move).
        indexes = [models.Index(fields=["collection", "query"], name="reranker_ju_collect_e2b6ce_idx")]

    def __str__(self) -> str:
        return f"{self.query[:60]!r} → {self.document} = {self.grade}"

    def clean(self):
        from django.core.exceptions import ValidationError

        self.query = normalize_query(self.query)
        if not self.query:
            raise ValidationError({"query": "The query is empty."})
        if self.document_id and self.collection_id and self.document.collection_id != self.collection_id:
            raise ValidationError({"document": "The document belongs to another collection."})


class ImplicitJudgment(models.Model):
    """A grade users' clicks imply (analytics/click_model.py, written by analytics/click_judgments.py
    from the search log), kept apart from staff judgments (`Judgment`): each derivation replaces a
    collection's rows, and where staff judged the same (query, document) their grade wins
    (relevance/judgments.py, collection_qrels)."""

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="implicit_judgments")
    query = models.CharField(max_length=QUERY_MAX_LENGTH)
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="implicit_judgments")
    grade = models.PositiveSmallIntegerField(validators=[MaxValueValidator(IMPLICIT_MAX_GRADE)])
    clicks = models.PositiveIntegerField()
    examinations = models.FloatField(help_text="Times examined, position bias accounted for (analytics/click_model.py).")
    derived_at = models.DateTimeField()

    class Meta:
        ordering = ["collection", "query", "-grade"]
        constraints = [
            models.UniqueConstraint(fields=["collection", "query", "document"], name="unique_implicit_judgment"),
        ]
        verbose_name = "implicit judgment (from clicks)"
        verbose_name_plural = "implicit judgments (from clicks)"

    def __str__(self) -> str:
        return f"{self.query[:60]!r} → {self.document} ≈ {self.grade} (clicks)"

    @property
    def relevance(self) -> float:
        return min(1.0, self.clicks / self.examinations) if self.examinations else 0.0


class RerankerRun(models.Model):
    """One `evaluate` or `train_reranker` run started from the admin and done by a worker of the
    `train` queue (relevance/run_tasks.py): its parameters, live progress and outcome."""

    class Kind(models.TextChoices):
        EVALUATE = "evaluate", "Evaluate"
        TRAIN = "train", "Train reranker"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class Trigger(models.TextChoices):
        STAFF = "staff", "Started by staff"
        FIRST_BUILD = "first_build", "Automatic: the first build went live"
        NEW_JUDGMENTS = "new_judgments", "Automatic: the judgments grew"

    FINISHED = (Status.DONE, Status.FAILED)

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="reranker_runs")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # The command's options (option name → value), as `manage.py evaluate|train_reranker` takes them.
    parameters = models.JSONField(default=dict)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    trigger = models.CharField(max_length=20, choices=Trigger.choices, default=Trigger.STAFF)
    # Train runs: the collection's staff + implicit judgments when queued (relevance/auto_reranker.py
    # counts the growth since the last train run against it).
    judgments = models.PositiveIntegerField(null=True, blank=True)
    # The current stage's progress ("hybrid", "training", ...): done of total, and its line.
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    progress_text = models.CharField(max_length=500, blank=True)
    # The lines the command would print, in order.
    log = models.TextField(blank=True)
    # evaluate: the metrics report (metrics.json without per-query figures) and its chart;
    # train: the model directory, its card and training.json. Kept for a refused model too.
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=255, blank=True)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The last progress or output line written (a run whose worker died stops reporting).
    reported_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.collection.slug} #{self.pk}"

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED
