"""Ranking metrics with their standard (trec_eval / BEIR) definitions.

    run    {query_id: [document_id, ...]}            ranked best first, one entry per document
    qrels  {query_id: {document_id: grade}}          grade 0 = judged not relevant

- nDCG@k: DCG@k / IDCG@k with linear gains, DCG@k = sum_{i=1..k} grade_i / log2(i + 1), and the
  ideal ranking built from all the query's judged grades (as pytrec_eval, which BEIR uses).
- Recall@k: relevant documents (grade > 0) in the top k / all relevant documents of the query.
- MRR@k: 1 / rank of the first relevant document in the top k, 0 when there is none.

Queries without any relevant judgment are left out of the averages (they have no ideal
ranking); a judged query missing from the run counts as zero, so a search that returns nothing
is punished rather than ignored.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def dcg(gains: Sequence[float], k: int) -> float:
    return sum(gain / math.log2(rank + 2) for rank, gain in enumerate(gains[:k]))


def ndcg_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    ideal = dcg(sorted((g for g in judged.values() if g > 0), reverse=True), k)
    if ideal == 0:
        raise ValueError("nDCG is undefined for a query without relevant documents")
    return dcg([judged.get(doc, 0) for doc in _dedup(ranking)], k) / ideal


def recall_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    relevant = {doc for doc, grade in judged.items() if grade > 0}
    if not relevant:
        raise ValueError("recall is undefined for a query without relevant documents")
    return len(relevant.intersection(_dedup(ranking)[:k])) / len(relevant)


def mrr_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    for rank, doc in enumerate(_dedup(ranking)[:k], start=1):
        if judged.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def _dedup(ranking: Sequence[str]) -> list[str]:
    """A document counts once, at its best rank (a search may return several chunks of it)."""
    return list(dict.fromkeys(ranking))


METRICS = {"ndcg": ndcg_at_k, "recall": recall_at_k, "mrr": mrr_at_k}


def evaluate_run(run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]],
                 cutoffs: Mapping[str, int]) -> dict:
    """Mean and per-query metrics. `cutoffs` names each metric and its k, e.g.
    {"ndcg": 10, "recall": 100, "mrr": 10} → keys "ndcg@10", "recall@100", "mrr@10"."""
    evaluated = {qid: judged for qid, judged in qrels.items() if any(g > 0 for g in judged.values())}
    per_query: dict[str, dict[str, float]] = {}
    for qid, judged in evaluated.items():
        ranking = run.get(qid, [])
        per_query[qid] = {f"{name}@{k}": METRICS[name](ranking, judged, k) for name, k in cutoffs.items()}
    names = [f"{name}@{k}" for name, k in cutoffs.items()]
    mean = {name: (sum(q[name] for q in per_query.values()) / len(per_query) if per_query else 0.0)
            for name in names}
    return {"queries": len(per_query), "mean": mean, "per_query": per_query}
