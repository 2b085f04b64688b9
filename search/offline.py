"""The project's own search, as evaluation and training see it.

`evaluate` and `train_reranker` must measure and mine exactly what users get, so they call the
first stage the views call (search/retrieval.py `first_stage`), send the reranker the same
passage text (search/rerank_client.py `passage_text`), reorder with the same function
(`apply_logits`: top N chunks by the model's fusion of logit and first stage) and group per
document the same way (search/results.py `build_results`). Only the transport differs: the
logits come from `reranker.cross_encoder.score_passages` in this process (the function the rerank
worker runs, on the same runtime), not through the queue, so that an evaluation never silently
counts a timed-out, unreranked answer as reranked.
"""
from __future__ import annotations

import time

import numpy as np

from indexer.lookups import serving_model
from indexer.models import Collection
from reranker.cross_encoder import load_reranker, score_passages
from reranker.fusion import Fusion

from .query_vectors import encode_queries, vector_cache
from .rerank_client import apply_logits, passage_text
from .results import build_results
from .retrieval import MODES, Hit, first_stage

# Evaluation reports and mining take the search's modes plainest first (the search page lists
# semantic first). A new mode must be placed here.
REPORT_ORDER = tuple(sorted(MODES, key=["keyword", "semantic", "hybrid"].index))


def first_stage_hits(collection: Collection, query: str, mode: str, depth: int) -> list[Hit]:
    """The first stage's chunks for `query` in one collection, best first."""
    return first_stage(query, mode, [collection], depth=depth, highlights=False).hits


def encoded_in_batches(collection: Collection, texts: list[str], block: int = 256):
    """Yield `texts` in order, having encoded each block of them in one batch first (into the
    search's query-vector cache): mining thousands of queries one encode call at a time spends
    most of its time in per-call overhead."""
    model = serving_model(collection)
    for start in range(0, len(texts), block):
        chunk = texts[start:start + block]
        missing = [text for text in dict.fromkeys(chunk) if vector_cache.get((model, text)) is None]
        for text, vector in zip(missing, encode_queries(missing, model) if missing else []):
            vector_cache.put((model, text), vector)
        yield from chunk


def document_ranking(hits: list[Hit]) -> list[str]:
    """External ids of the documents in the order the search page shows them (grouped)."""
    return [item.external_id for item in build_results(hits, group=True)]


def reranked_hits(hits: list[Hit], logits: np.ndarray, fusion: Fusion = Fusion()) -> list[Hit]:
    """The chunks reordered as the search reorders them: the scored head by the model's fusion of
    logits and first stage (reranker/fusion.py), then the rest."""
    return apply_logits(list(hits), [float(x) for x in logits], fusion)


class PairScorer:
    """Raw logits of (query, passage) pairs by a reranker model, each pair scored once: modes
    share most of their candidates, and a pair's logit does not depend on the other candidates."""

    def __init__(self, model_id: str):
        self.model_id = model_id
        self.model = load_reranker(model_id)  # fails here, clearly, if the model is unusable
        self.cache: dict[tuple[str, str], float] = {}
        self.scored_here = 0  # pairs scored in this process (the others came from --pair-scores)

    def logits(self, query: str, passages: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(p for p in passages if (query, p) not in self.cache))
        if missing:
            values = score_passages(self.model_id, query, missing)
            self.scored_here += len(missing)
            self.cache.update({(query, p): float(v) for p, v in zip(missing, values)})
        return np.array([self.cache[(query, p)] for p in passages], dtype=np.float32)

    def timed_logits(self, query: str, passages: list[str]) -> float:
        """Seconds to score these passages from scratch (what one search's rerank costs)."""
        started = time.perf_counter()
        score_passages(self.model_id, query, passages)
        return time.perf_counter() - started
