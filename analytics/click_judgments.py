"""The search log's clicks as implicit judgments (relevance.models.ImplicitJudgment): every
logged page of results becomes an Impression, the click model (analytics/click_model.py) grades
each (query, document) examined often enough, and the grades replace the previous derivation.

The whole log is read (SEARCH_LOG_DAYS of it): an implicit judgment lives as long as the clicks
behind it. Run by `manage.py click_judgments` and by celery beat (CLICK_JUDGMENTS_INTERVAL).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from indexer.models import Document
from relevance.models import ImplicitJudgment

from .click_model import Impression, implied_grades, propensities
from .models import SearchClick, SearchLog


@dataclass
class Derivation:
    searches: int = 0
    clicks: int = 0
    propensity: dict[int, float] = field(default_factory=dict)
    grades: Counter = field(default_factory=Counter)  # grade -> judgments
    by_collection: Counter = field(default_factory=Counter)  # collection slug -> judgments

    def summary(self) -> str:
        grades = ", ".join(f"{self.grades[g]} × grade {g}" for g in sorted(self.grades)) or "none"
        return (f"{self.searches} logged searches with results, {self.clicks} clicks: "
                f"{sum(self.grades.values())} implicit judgments ({grades})")


def impressions() -> tuple[list[Impression], int]:
    """Every logged page that showed results, with its clicked ranks; and the clicks counted."""
    clicked: dict = defaultdict(set)
    for search_id, rank in SearchClick.objects.values_list("search_id", "rank").iterator():
        clicked[search_id].add(rank)
    rows = SearchLog.objects.filter(result_count__gt=0).values_list("pk", "query", "first_rank", "shown")
    found = [Impression(query, tuple(shown), first_rank, frozenset(clicked.get(pk, ())))
             for pk, query, first_rank, shown in rows.iterator() if shown]
    return found, sum(len(ranks) for ranks in clicked.values())


def derive_implicit_judgments() -> Derivation:
    """Grade the log's clicks and replace every ImplicitJudgment with the result."""
    shown, clicks = impressions()
    derivation = Derivation(searches=len(shown), clicks=clicks)
    derivation.propensity = propensities(shown)
    grades = implied_grades(shown, derivation.propensity)
    owners = {pk: (collection_id, slug) for pk, collection_id, slug in Document.objects
              .filter(pk__in={g.document for g in grades}).values_list("pk", "collection_id", "collection__slug")}
    now = timezone.now()
    rows = [ImplicitJudgment(collection_id=owners[g.document][0], query=g.query, document_id=g.document,
                             grade=g.grade, clicks=g.clicks, examinations=g.examinations, derived_at=now)
            for g in grades if g.document in owners]  # a document deleted since is no judgment
    with transaction.atomic():
        ImplicitJudgment.objects.all().delete()
        ImplicitJudgment.objects.bulk_create(rows, batch_size=500)
    for row in rows:
        derivation.grades[row.grade] += 1
        derivation.by_collection[owners[row.document_id][1]] += 1
    return derivation
