"""The project's own search, as evaluation and training see it.

`evaluate` and `train_reranker` must measure and mine exactly what users get, so they call the
first stage the views call (`searchsite.search.first_stage`), send the reranker the same
passage text (`searchsite.ranking.passage_text`), reorder with the same function
(`searchsite.ranking.apply_logits`, top N chunks by the model's fusion of logit and first stage) and group per document the same way
(`searchsite.ranking.build_results`). Only the transport differs: the logits come from
`reranker.cross_encoder.score_pairs` in this process (the function the rerank worker runs, on
the same runtime),
not through the queue, so that an evaluation never silently counts a timed-out, unreranked
answer as reranked.
"""
from __future__ import annotations

import time

import numpy as np

from indexer.models import Collection
from reranker.fusion import Fusion
from search.retrieval import MODES

# The modes are the search's (searchsite.search.MODES, semantic first on the search page);
# evaluation reports and mining take them plainest first. A new mode must be placed here.
REPORT_ORDER = tuple(sorted(MODES, key=["keyword", "semantic", "hybrid"].index))


def first_stage_hits(collection: Collection, query: str, mode: str, depth: int) -> list:
    """The first stage's chunks for `query` in one collection (searchsite.search.Hit), best first."""
    from search.retrieval import first_stage

    return first_stage(query, mode, [collection], depth=depth, highlights=False).hits


def encoded_in_batches(collection: Collection, texts: list[str], block: int = 256):
    """Yield `texts` in order, having encoded each block of them in one batch first (into the
    search's query-vector cache): mining thousands of queries one encode call at a time spends
    most of its time in per-call overhead."""
    from indexer.builds import serving_model
    from search.retrieval import encode_queries, query_vectors

    model = serving_model(collection)
    for start in range(0, len(texts), block):
        chunk = texts[start:start + block]
        missing = [text for text in dict.fromkeys(chunk) if query_vectors.get((model, text)) is None]
        for text, vector in zip(missing, encode_queries(missing, model) if missing else []):
            query_vectors.put((model, text), vector)
        yield from chunk


def passage(hit) -> str:
    from search.results import passage_text

    return passage_text(hit)


def document_ranking(hits: list) -> list[str]:
    """External ids of the documents in the order the search page shows them (grouped)."""
    from search.results import build_results

    return [item["external_id"] for item in build_results(hits, group=True)]


def reranked_hits(hits: list, logits: np.ndarray, fusion: Fusion = Fusion()) -> list:
    """The chunks reordered as the search reorders them: the scored head by the model's fusion of
    logits and first stage (reranker/fusion.py), then the rest."""
    from search.results import apply_logits

    return apply_logits(list(hits), [float(x) for x in logits], fusion)


class PairScorer:
    """Raw logits of (query, passage) pairs by a reranker model, each pair scored once: modes
    share most of their candidates, and a pair's logit does not depend on the other candidates."""

    def __init__(self, model_id: str):
        from reranker.cross_encoder import load_reranker

        self.model_id = model_id
        self.model = load_reranker(model_id)  # fails here, clearly, if the model is unusable
        self.cache: dict[tuple[str, str], float] = {}
        self.scored_here = 0  # pairs scored in this process (the others came from --pair-scores)

    def logits(self, query: str, passages: list[str]) -> np.ndarray:
        from reranker.cross_encoder import score_pairs

        missing = list(dict.fromkeys(p for p in passages if (query, p) not in self.cache))
        if missing:
            values = score_pairs(self.model_id, query, missing)
            self.scored_here += len(missing)
            self.cache.update({(query, p): float(v) for p, v in zip(missing, values)})
        return np.array([self.cache[(query, p)] for p in passages], dtype=np.float32)

    def timed_logits(self, query: str, passages: list[str]) -> float:
        """Seconds to score these passages from scratch (what one search's rerank costs)."""
        from reranker.cross_encoder import score_pairs

        started = time.perf_counter()
        score_pairs(self.model_id, query, passages)
        return time.perf_counter() - started
