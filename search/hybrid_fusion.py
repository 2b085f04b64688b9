"""How the hybrid mode merges its two candidate lists (kNN and BM25) into one: the rule, its
defaults per language and the candidates a choice on judged queries tries.

    rrf     score = w / (k + semantic rank) + (1 - w) / (k + keyword rank)   (w 0.5: plain RRF)
    minmax  score = w * semantic' + (1 - w) * keyword', each list's scores scaled to [0, 1]
            over its candidates (a chunk missing from a list gets 0 there)
    zscore  the same with each list standardised (a missing chunk gets the list's minimum)

`w` is the weight of the semantic list. Equal-weight RRF ignores how far apart the scores are,
and so throws a better bi-encoder's gain away; the score rules keep it (the choice and its
figures: docs/search.md, "Hybrid fusion"; bench/fusion_choice.py).

Pure functions over (key, score) lists, so the query path (search/retrieval.py), the choice on a
collection's judgments (relevance/fusion_choice.py) and the benchmark fuse the same way.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Hashable, Iterable

METHODS = ("rrf", "minmax", "zscore")


@dataclass(frozen=True)
class FusionRule:
    method: str
    weight: float  # of the semantic list, 0..1
    k: int = 60  # rank offset, rrf only

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"fusion method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"fusion weight must be between 0 and 1 (the semantic list's share), not {self.weight}")
        if self.method == "rrf" and self.k < 1:
            raise ValueError(f"the rrf rank offset k must be 1 or more, not {self.k}")

    def __str__(self) -> str:
        return f"{self.method} w={self.weight:g}" + (f" k={self.k}" if self.method == "rrf" else "")

    def to_dict(self) -> dict:
        return asdict(self) if self.method == "rrf" else {"method": self.method, "weight": self.weight}

    @classmethod
    def from_dict(cls, data: dict) -> "FusionRule":
        return cls(method=str(data["method"]), weight=float(data["weight"]), k=int(data.get("k", 60)))

    @classmethod
    def parse(cls, text: str) -> "FusionRule":
        """`method:weight[:k]`, e.g. `minmax:0.65` or `rrf:0.5:60` (plain RRF)."""
        parts = text.strip().split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[0] != "rrf"):
            raise ValueError(f"a fusion rule is method:weight (minmax, zscore) or rrf:weight:k, not {text!r}")
        try:
            return cls(parts[0], float(parts[1]), int(parts[2]) if len(parts) == 3 else 60)
        except ValueError as exc:
            raise ValueError(f"fusion rule {text!r}: {exc}") from None


PLAIN_RRF = FusionRule("rrf", 0.5, 60)
# Chosen on train queries (bench/fusion_choice.py; docs/search.md "Hybrid fusion"): for English the
# one rule best on SciFact and NFCorpus train together with bge-small-en-v1.5; Chinese has no train
# split, so two-fold cross-validation on CMRC 2018 dev chose its rule. `none` (the standard
# analyzer) takes the English rule: its vectors come from the same model.
LANGUAGE_DEFAULTS = {
    "en": FusionRule("minmax", 0.65),
    "none": FusionRule("minmax", 0.65),
    "zh": FusionRule("zscore", 0.4),
}
MIXED_DEFAULT = LANGUAGE_DEFAULTS["en"]  # collections searched together whose rules differ


def candidates() -> Iterable[FusionRule]:
    """The rules a choice on judged queries tries: a grid of weights for each method."""
    weights = [round(i * 0.05, 2) for i in range(21)]
    for k in (5, 10, 20, 40, 60, 100):
        for w in weights:
            yield FusionRule("rrf", w, k)
    for w in weights:
        yield FusionRule("minmax", w)
        yield FusionRule("zscore", w)


def _normalised(scores: list[float], method: str) -> list[float]:
    if not scores:
        return []
    if method == "minmax":
        low, high = min(scores), max(scores)
        return [(s - low) / (high - low) if high > low else 1.0 for s in scores]
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    return [(s - mean) / std if std > 0 else 0.0 for s in scores]


def fused_scores(semantic: list[tuple[Hashable, float]], keyword: list[tuple[Hashable, float]],
                 rule: FusionRule) -> dict[Hashable, float]:
    """The fused score of every key in either ranked list (each list best first)."""
    fused: dict[Hashable, float] = {}
    if rule.method == "rrf":
        for weight, ranked in ((rule.weight, semantic), (1.0 - rule.weight, keyword)):
            for rank, (key, _) in enumerate(ranked, start=1):
                fused[key] = fused.get(key, 0.0) + weight / (rule.k + rank)
        return fused
    parts = []
    for weight, ranked in ((rule.weight, semantic), (1.0 - rule.weight, keyword)):
        values = _normalised([score for _, score in ranked], rule.method)
        floor = 0.0 if rule.method == "minmax" or not values else min(values)
        parts.append((weight, {key: value for (key, _), value in zip(ranked, values)}, floor))
    for key in parts[0][1].keys() | parts[1][1].keys():
        fused[key] = sum(weight * scores.get(key, floor) for weight, scores, floor in parts)
    return fused
