"""The hybrid mode's fusion rule of one collection, chosen on its judged queries.

Each judged query's semantic and keyword lists are fetched once through the project's first stage
(the lists the hybrid mode fuses); every candidate rule (search/hybrid_fusion.py) is then scored
offline by nDCG@10 of the documents in the order the page shows them. The rule is recorded only
when it beats the language's default on queries it was not chosen on: two folds of the judged
queries, the rule chosen on each measured on the other. Then the rule chosen on all of them is
stored with the model whose vectors it was chosen for (search/retrieval.py uses it while the
live index serves that model).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from django.utils import timezone

from common.progress import progress
from indexer.lookups import serving
from indexer.models import Collection
from reranker.metrics import evaluate_run
from search import offline
from search.hybrid_fusion import FusionRule, candidates, fused_scores
from search.retrieval import default_fusion

CUTOFF = 10
MIN_QUERIES = 20  # fewer judged queries cannot tell rules apart


@dataclass
class QueryLists:
    semantic: list[tuple[str, float]]  # (chunk id, score), best first
    keyword: list[tuple[str, float]]
    documents: dict[str, str]  # chunk id -> external id of its document


@dataclass
class FusionChoice:
    rule: FusionRule  # chosen on all the judged queries
    default: FusionRule  # what the collection would use without a choice
    queries: int
    ndcg: float  # the chosen rule, all queries (chosen on them: optimistic)
    default_ndcg: float  # the default, all queries
    cross_validated: float  # rules chosen on one fold, measured on the other
    recorded: bool = False
    folds: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        verdict = ("recorded: the hybrid mode now uses it" if self.recorded else
                   "not recorded: it does not beat the default on queries it was not chosen on")
        return (f"{self.queries} judged queries, nDCG@{CUTOFF}: default {self.default} {self.default_ndcg:.4f}; "
                f"chosen rules cross-validated (2 folds: {', '.join(self.folds)}) {self.cross_validated:.4f}; "
                f"{self.rule} on all {self.ndcg:.4f}. {verdict}")


def fetch_lists(collection: Collection, queries: dict[str, str], depth: int, progress=progress) -> dict[str, QueryLists]:
    texts = [queries[qid] for qid in sorted(queries)]
    lists = {}
    for qid, text in progress(zip(sorted(queries), offline.encoded_in_batches(collection, texts)),
                              total=len(texts), desc=f"{collection.slug}: first stage", unit="query"):
        semantic = offline.first_stage_hits(collection, text, "semantic", depth)
        keyword = offline.first_stage_hits(collection, text, "keyword", depth)
        lists[qid] = QueryLists(
            semantic=[(h.id, h.score) for h in semantic], keyword=[(h.id, h.score) for h in keyword],
            documents={h.id: h.external_id for h in (*semantic, *keyword)})
    return lists


def ranking(lists: QueryLists, rule: FusionRule) -> list[str]:
    """Documents in page order: each at its best chunk."""
    scores = fused_scores(lists.semantic, lists.keyword, rule)
    seen, documents = set(), []
    for chunk_id in sorted(scores, key=lambda key: (-scores[key], key)):
        document = lists.documents[chunk_id]
        if document not in seen:
            seen.add(document)
            documents.append(document)
    return documents


def mean_ndcg(lists: dict[str, QueryLists], qrels: dict, rule: FusionRule, qids: list[str]) -> float:
    run = {qid: ranking(lists[qid], rule) for qid in qids}
    return evaluate_run(run, {qid: qrels[qid] for qid in qids}, {"ndcg": CUTOFF})["mean"][f"ndcg@{CUTOFF}"]


def best_rule(lists, qrels, qids, default: FusionRule) -> tuple[FusionRule, float]:
    """The best candidate on `qids`; ties go to the default, then to the earlier candidate."""
    best, best_score = default, mean_ndcg(lists, qrels, default, qids)
    for rule in candidates():
        score = mean_ndcg(lists, qrels, rule, qids)
        if round(score, 6) > round(best_score, 6):
            best, best_score = rule, score
    return best, best_score


def folds(qids: list[str]) -> tuple[list[str], list[str]]:
    first = [q for q in qids if int(hashlib.sha1(q.encode()).hexdigest(), 16) % 2 == 0]
    taken = set(first)
    return first, [q for q in qids if q not in taken]


def choose_fusion(collection: Collection, queries: dict[str, str], qrels: dict[str, dict[str, int]],
                  depth: int = 100, record: bool = True, progress=progress) -> FusionChoice:
    judged = {qid: queries[qid] for qid in qrels if qid in queries and queries[qid].strip()}
    if len(judged) < MIN_QUERIES:
        raise ValueError(f"collection {collection.slug!r}: {len(judged)} judged queries; choosing a fusion rule "
                         f"needs at least {MIN_QUERIES}")
    model, language = serving(collection)
    default, _ = default_fusion(language)
    lists = fetch_lists(collection, judged, depth, progress=progress)
    qids = sorted(judged)
    a, b = folds(qids)
    rule_a, _ = best_rule(lists, qrels, a, default)
    rule_b, _ = best_rule(lists, qrels, b, default)
    cross_validated = (mean_ndcg(lists, qrels, rule_a, b) * len(b) + mean_ndcg(lists, qrels, rule_b, a) * len(a)) / len(qids)
    default_ndcg = mean_ndcg(lists, qrels, default, qids)
    rule, ndcg = best_rule(lists, qrels, qids, default)
    choice = FusionChoice(rule=rule, default=default, queries=len(qids), ndcg=ndcg, default_ndcg=default_ndcg,
                          cross_validated=cross_validated, folds=[str(rule_a), str(rule_b)])
    if record and rule != default and round(cross_validated, 6) > round(default_ndcg, 6):
        collection.hybrid_fusion = {
            "rule": rule.to_dict(), "model": model, "queries": len(qids), "ndcg": round(ndcg, 4),
            "cross_validated_ndcg": round(cross_validated, 4), "default": str(default),
            "default_ndcg": round(default_ndcg, 4), "chosen_at": timezone.now().isoformat(timespec="seconds"),
        }
        collection.save(update_fields=["hybrid_fusion", "updated_at"])
        choice.recorded = True
    return choice
