"""Clicks and skips as graded judgments, with position bias taken into account.

A position-based click model: a result is clicked when it is examined and found relevant, and
the chance of being examined falls with the rank, the same for every query (the propensity).

- The propensity of rank r is estimated from the whole log as the click-through rate at r over
  the rate at rank 1, made non-increasing and kept at PROPENSITY_FLOOR at least (so one click far
  down cannot outweigh everything; ranks shown fewer than MIN_SHOWN times take the rank above's).
- A result above the lowest click of its search was passed over by a user who read further
  down: it counts as examined for sure (skip-above). Every other showing counts as examined with
  the propensity of its rank.
- Per (query, document): relevance = clicks / (examinations + PRIOR_EXAMINATIONS), the prior
  being examinations without a click that every pair starts with, so that one stray click far
  down (a small propensity) is not taken for a sure answer; graded 2 from RELEVANT_AT, 1 from
  SOMEWHAT_AT, else 0. A clicked pair needs MIN_SHOWINGS showings; a pair never clicked is graded
  0 only once its examinations reach MIN_EXAMINATIONS (shown often, but deep down where few read,
  says nothing). Clicks never give the top grade (MAX_GRADE 3 stays with staff).

Pure Python, no Django: the unit tests build logs by hand.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PROPENSITY_FLOOR = 0.1
PRIOR_EXAMINATIONS = 2.0
MIN_SHOWN = 20
MIN_EXAMINATIONS = 3.0
MIN_SHOWINGS = 3
RELEVANT_AT = 0.5
SOMEWHAT_AT = 0.2


@dataclass(frozen=True)
class Impression:
    """One logged page of results: the query, the documents in rank order from `first_rank`,
    and the ranks clicked."""
    query: str
    shown: Sequence[int]
    first_rank: int
    clicked: frozenset[int]

    def ranks(self):
        return enumerate(self.shown, start=self.first_rank)


@dataclass(frozen=True)
class ImpliedGrade:
    query: str
    document: int
    grade: int
    clicks: int
    examinations: float
    shown: int

    @property
    def relevance(self) -> float:
        return relevance(self.clicks, self.examinations)


def relevance(clicks: int, examinations: float) -> float:
    return min(1.0, clicks / (examinations + PRIOR_EXAMINATIONS))


def propensities(impressions: Iterable[Impression], max_rank: int | None = None) -> dict[int, float]:
    """{rank: chance of being examined, relative to rank 1} from the log's click-through by rank."""
    shown: dict[int, int] = defaultdict(int)
    clicked: dict[int, int] = defaultdict(int)
    for impression in impressions:
        for rank, _ in impression.ranks():
            shown[rank] += 1
            clicked[rank] += rank in impression.clicked
    if not shown:
        return {}
    last = max_rank or max(shown)
    top_rate = clicked[1] / shown[1] if shown.get(1) else 0.0
    result: dict[int, float] = {}
    previous = 1.0
    for rank in range(1, last + 1):
        if rank == 1 or top_rate == 0.0:
            value = 1.0 if rank == 1 else previous
        elif shown.get(rank, 0) < MIN_SHOWN:
            value = previous
        else:
            value = (clicked[rank] / shown[rank]) / top_rate
        value = max(PROPENSITY_FLOOR, min(previous, value))
        result[rank] = value
        previous = value
    return result


def grade_for(relevance: float) -> int:
    return 2 if relevance >= RELEVANT_AT else 1 if relevance >= SOMEWHAT_AT else 0


def implied_grades(impressions: Sequence[Impression], propensity: dict[int, float] | None = None,
                   min_examinations: float = MIN_EXAMINATIONS, min_showings: int = MIN_SHOWINGS) -> list[ImpliedGrade]:
    """The graded judgments the clicks imply, for each (query, document) seen often enough;
    `propensity` defaults to the one estimated from these impressions."""
    if propensity is None:
        propensity = propensities(impressions)
    lowest_known = min(propensity.values(), default=PROPENSITY_FLOOR)  # ranks deeper than the estimate
    clicks: dict[tuple[str, int], int] = defaultdict(int)
    examinations: dict[tuple[str, int], float] = defaultdict(float)
    shown: dict[tuple[str, int], int] = defaultdict(int)
    for impression in impressions:
        lowest_click = max(impression.clicked, default=0)
        for rank, document in impression.ranks():
            key = (impression.query, document)
            examined = propensity.get(rank, lowest_known)
            if rank < lowest_click:
                examined = 1.0  # passed over on the way to a click further down
            examinations[key] += examined
            shown[key] += 1
            clicks[key] += rank in impression.clicked
    def enough(key) -> bool:
        return shown[key] >= min_showings if clicks[key] else examinations[key] >= min_examinations

    return [ImpliedGrade(key[0], key[1], grade_for(relevance(clicks[key], examined)), clicks[key],
                         round(examined, 4), shown[key])
            for key, examined in sorted(examinations.items()) if enough(key)]
