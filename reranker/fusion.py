"""The final order of the reranked head: the cross-encoder's order, fused with the first stage's.

A cross-encoder trained on a few hundred judgments is a strong but noisy judge; the first
stage (BM25, kNN or their fusion) carries evidence it does not see. The final order of the
top N is one of two fusions of the two (`kind`):

    rrf:    fused(d) = 1 / (k + reranker_rank(d)) + weight / (k + first_stage_rank(d))
    score:  fused(d) = z(logit(d)) - weight * ln(first_stage_rank(d))

`z` standardises the head's logits (mean 0, standard deviation 1), so `score` keeps how sure
the reranker is: a clear margin overturns the first stage, a near tie leaves its order, which
reciprocal-rank fusion, seeing only the reranker's ranks, cannot tell apart.

`weight` 0 is the reranker's order alone (what a model without a `fusion.json` gets, e.g. a
Hugging Face cross-encoder). `train_reranker` chooses the kind and its parameters on its
held-out queries from a small grid, once per first-stage mode (BM25 alone deserves less weight
than the hybrid), and writes them into the model directory as `fusion.json`, beside the
weights; the rerank worker sends them with the logits, the web process applies the one of the
search's mode, and `evaluate` reads them the same way. Why both kinds: docs/relevance.md
("Fusion with the first stage").

Django-free on purpose (reranker/training.py runs as a plain script on a GPU machine).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .metrics import evaluate_run

FILE = "fusion.json"
KINDS = ("rrf", "score")
WEIGHTS = {"rrf": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0), "score": (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)}
KS = (10, 60)  # rank offsets tried for rrf
# A kind's grid grows past its WEIGHTS when the best choice is its largest weight (the first
# stage nearly alone), up to this.
MAX_WEIGHT = 16.0


@dataclass(frozen=True)
class Fusion:
    weight: float = 0.0   # weight of the first stage's rank (0: the reranker's order alone)
    k: int = 10           # rank offset of reciprocal-rank fusion (unused by `score`)
    kind: str = "rrf"     # rrf or score (the module's docstring)

    def order(self, logits: Sequence[float]) -> list[int]:
        """Positions of the head (given in first-stage order) in their final order; ties keep
        first-stage order."""
        scores = np.asarray(logits, dtype=np.float64)
        by_logit = np.argsort(-scores, kind="stable")
        if self.weight == 0 or len(scores) == 0:
            return [int(i) for i in by_logit]
        first_rank = np.arange(1, len(scores) + 1)
        if self.kind == "score":
            spread = scores.std()
            standard = (scores - scores.mean()) / spread if spread > 0 else np.zeros_like(scores)
            fused = standard - self.weight * np.log(first_rank)
        else:
            reranker_rank = np.empty(len(scores))
            reranker_rank[by_logit] = first_rank
            fused = 1.0 / (self.k + reranker_rank) + self.weight / (self.k + first_rank)
        return [int(i) for i in np.argsort(-fused, kind="stable")]

    @property
    def label(self) -> str:
        """How the grid and the reports name it."""
        if self.kind == "score":
            return f"score w={self.weight:g}"
        return f"w={self.weight:g},k={self.k}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ModelFusion:
    """A model's fusions: one per first-stage mode where calibrated, else `default`."""
    default: Fusion = Fusion()
    modes: tuple[tuple[str, Fusion], ...] = ()

    def for_mode(self, mode: str) -> Fusion:
        return dict(self.modes).get(mode, self.default)

    def to_dict(self) -> dict:
        return {**self.default.to_dict(), "modes": {mode: f.to_dict() for mode, f in self.modes}}

    @classmethod
    def from_dict(cls, raw: dict) -> "ModelFusion":
        def one(item: dict) -> Fusion:
            # Files from before `score` existed have no kind: reciprocal-rank fusion.
            fusion = Fusion(weight=float(item["weight"]), k=int(item["k"]), kind=str(item.get("kind", "rrf")))
            if fusion.weight < 0 or fusion.k < 1:
                raise ValueError(f"weight must be >= 0 and k >= 1, not {item}")
            if fusion.kind not in KINDS:
                raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {fusion.kind!r}")
            return fusion

        return cls(default=one(raw), modes=tuple(sorted((m, one(f)) for m, f in (raw.get("modes") or {}).items())))


def load_fusion(model_path: str | Path | None) -> ModelFusion:
    """The fusions saved beside a model directory's weights; the reranker alone when there are
    none (a hub id, or a model trained before fusion existed)."""
    path = Path(model_path) / FILE if model_path else None
    if path is None or not path.is_file():
        return ModelFusion()
    try:
        return ModelFusion.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a fusion file ({exc})") from None


def save_fusion(fusion: ModelFusion, model_dir: str | Path) -> Path:
    path = Path(model_dir) / FILE
    path.write_text(json.dumps(fusion.to_dict(), indent=2) + "\n")
    return path


def choose_fusion(heads: Sequence[tuple[list[str], Sequence[float], list[str]]], qrels: dict[str, dict[str, int]],
                  queries: Sequence[str], metric: str = "ndcg@10") -> tuple[Fusion, dict[str, float]]:
    """The fusion of the grid (both kinds) with the best mean `metric` over held-out queries.

    `heads[i]` is (head documents in first-stage order, their logits, the documents below the
    head) of `queries[i]`. Returns the choice and the metric of every grid point (by its label).
    Ties go to the smaller weight (the reranker alone when fusion does not help), then to rrf.
    A choice on a kind's largest weight means the best may lie beyond it: that kind's grid
    grows (doubling its largest weight, up to MAX_WEIGHT) until the choice is inside it."""
    name, cutoff = metric.split("@")
    table: dict[str, float] = {}
    best, best_value = Fusion(), -1.0
    weights = {kind: list(WEIGHTS[kind]) for kind in KINDS}
    tried: set[Fusion] = set()
    while True:
        for kind in KINDS:
            for k in (KS if kind == "rrf" else KS[:1]):
                for weight in weights[kind]:
                    # Weight 0 is the reranker alone, whatever the kind and k.
                    fusion = Fusion(weight=weight, k=k if weight else KS[0], kind=kind if weight else "rrf")
                    if fusion in tried:
                        continue
                    tried.add(fusion)
                    run = {q: [head[i] for i in fusion.order(logits)] + rest
                           for q, (head, logits, rest) in zip(queries, heads)}
                    value = evaluate_run(run, qrels, {name: int(cutoff)})["mean"][metric]
                    table[fusion.label] = round(value, 4)
                    if value > best_value + 1e-9 or (abs(value - best_value) <= 1e-9 and weight < best.weight):
                        best, best_value = fusion, value
        edge = weights[best.kind][-1]
        if best.weight < edge or edge >= MAX_WEIGHT:
            return best, table
        weights[best.kind].append(min(MAX_WEIGHT, edge * 2))
