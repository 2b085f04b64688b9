"""A whole search: first stage (searchsite/search.py), the rerank worker within its latency
budget, grouping per document, pages.

Second stage. The head of the first stage's list goes to the rerank workers (reranker/tasks.py):
as many chunks as the workers score within RERANK_TARGET_SECONDS at their measured speed, at
most RERANK_TOP_N; each chunk to its collection's reranker (else the site's), one request per
model, all sent at once, and the web process waits at most RERANK_TIMEOUT. Each model's chunks
are reordered among the places they held, by the model's fusion of its logits with the first
stage; the others keep their places. When a worker is slow or missing, fails, or no model is
set, that share keeps the first-stage order, and `not_reranked` says why when nothing was
reranked: never an error page.

Pages. Page 1 always searches afresh and stores the ranked list for SEARCH_SNAPSHOT_SECONDS
(Django cache `search`, in Redis); pages 2, 3... are cut from that snapshot, so a result never
moves between pages even if reranking succeeded on one request and not on the next. The
snapshot key holds everything that decides the list, including the collections searched after
access control, so a user never reads a list built from collections they may not see.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import caches

from reranker.cross_encoder import configured_model, sigmoid
from reranker.fusion import Fusion, ModelFusion
from reranker.speed import read_speed

from .params import SearchParams
from .retrieval import Hit, first_stage, highlight_html, plain_text

log = logging.getLogger(__name__)


@dataclass
class Share:
    """One reranker model's part of the head: the positions (in the first-stage list) of the
    chunks it scores, and what came back."""
    model: str
    sent_model: str  # "" lets the worker use its RERANKER_MODEL setting
    positions: list[int]
    reranked: bool = False
    reason: str | None = None
    logits: list[float] | None = None
    fusion: ModelFusion = ModelFusion()
    runtime: str | None = None
    precision: str | None = None
    ms: float = 0.0

    def to_dict(self, mode: str) -> dict:
        return {"model": self.model, "candidates": len(self.positions), "applied": self.reranked,
                "not_reranked": self.reason, "runtime": self.runtime, "precision": self.precision,
                "fusion": self.fusion.for_mode(mode).to_dict() if self.reranked else None,
                "ms": round(self.ms, 2)}


@dataclass
class RerankOutcome:
    reranked: bool  # at least one model's share was reranked
    reason: str | None = None  # why not (nothing reranked), shown as "not reranked: <reason>"
    ms: float = 0.0
    shares: list[Share] = field(default_factory=list)

    @property
    def candidates(self) -> int:
        """Chunks sent to a reranker."""
        return sum(len(share.positions) for share in self.shares)

    @property
    def reranked_chunks(self) -> int:
        return sum(len(share.positions) for share in self.shares if share.reranked)

    @property
    def model(self) -> str | None:
        """The model, when one model reranked (or was asked to rerank) the whole head."""
        models = {share.model for share in self.shares}
        return models.pop() if len(models) == 1 else None


def passage_text(hit: Hit) -> str:
    """What the cross-encoder reads for a chunk: its document's title, then the chunk (the same
    text the bi-encoder embedded, see indexer/pipeline.py)."""
    return f"{hit.title}\n{hit.text}" if hit.title else hit.text


def withdraw_request(task_id: str) -> bool:
    """Take an unanswered rerank request back out of the queue; True if it was still there.

    A request still in the queue after the budget was taken by no worker: none is running (or
    all are busy). Withdrawing it also keeps a queue without workers from filling Redis with
    requests nobody will read. The key layout is kombu's Redis transport: one list per queue,
    named <CELERY_KEY_PREFIX><queue>, holding JSON messages whose headers carry the task id.
    """
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
    key = f"{settings.CELERY_KEY_PREFIX}{settings.RERANK_QUEUE}"
    needle = task_id.encode()
    try:
        for message in client.lrange(key, 0, -1):
            if needle in message:
                return client.lrem(key, 1, message) == 1
    except redis.RedisError:
        return False
    finally:
        client.close()
    return False


# How often the web process looks for the reranker's answer (seconds). Celery's own
# `result.get(timeout=...)` with the Redis backend checks its timeout only once a second, which
# would overrun a latency budget of a fraction of a second; a Redis GET every few ms costs little.
RESULT_POLL_SECONDS = 0.003


def wait_for(result, deadline: float):
    """The task's return value, or CeleryTimeout at `deadline` (time.perf_counter())."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    while not result.ready():
        if time.perf_counter() >= deadline:
            raise CeleryTimeout(f"no answer from task {result.id}")
        time.sleep(RESULT_POLL_SECONDS)
    try:
        return result.get(timeout=1)  # ready: read from the result already fetched; raises the task's error
    finally:
        result.forget()


def plan_shares(hits: list[Hit], collections: dict) -> tuple[list[Share], str | None]:
    """Which chunks go to which reranker: the longest first-stage prefix (at most RERANK_TOP_N
    chunks) whose estimated scoring time fits RERANK_TARGET_SECONDS at the workers' measured
    speed of each model (reranker/speed.py), never fewer than RERANK_MIN_CANDIDATES. A chunk
    goes to its collection's own reranker, else the site's; chunks of collections with neither
    keep their place. Returns (shares, why nothing can be reranked)."""
    if not hits:
        return [], "no results to rerank"
    budget = settings.RERANK_TARGET_SECONDS
    floor = max(1, settings.RERANK_MIN_CANDIDATES)
    shares: dict[str, Share] = {}
    speeds: dict[str, float | None] = {}
    spent, sent = 0.0, 0
    for position, hit in enumerate(hits[: settings.RERANK_TOP_N]):
        own = collections[hit.collection].reranker_model.strip()
        model = configured_model(own)
        if not model:
            continue
        if model not in speeds:
            speeds[model] = read_speed(model)
        # Unknown speed (no worker has measured it yet): as if only the floor fitted.
        cost = 1.0 / speeds[model] if speeds[model] else budget / floor
        if sent >= floor and spent + cost > budget:
            break
        spent += cost
        sent += 1
        shares.setdefault(model, Share(model=model, sent_model=own, positions=[])).positions.append(position)
    if not shares:
        return [], "no reranker model configured"
    return list(shares.values()), None


def rerank_hits(query: str, hits: list[Hit], collections: dict) -> RerankOutcome:
    """Ask the rerank workers for the logits of each model's share of the head (plan_shares),
    all at once, waiting at most RERANK_TIMEOUT for all of them."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    from reranker.tasks import rerank

    shares, reason = plan_shares(hits, collections)
    if reason:
        return RerankOutcome(False, reason)
    budget = settings.RERANK_TIMEOUT
    started = time.perf_counter()
    pending = []
    for share in shares:
        passages = [passage_text(hits[i]) for i in share.positions]
        try:
            # `expires`: a worker that takes the message after the budget drops it instead of
            # scoring for nobody (at least 1 s, for clocks of different hosts that disagree a
            # little). `retry=False`: a broker that is down fails now, not after retries.
            result = rerank.apply_async(args=[query, passages, share.sent_model], queue=settings.RERANK_QUEUE,
                                        expires=max(budget, 1.0), retry=False)
        except Exception as exc:
            share.reason = f"the task broker is unreachable ({type(exc).__name__})"
            continue
        pending.append((share, result))
    for share, result in pending:
        try:
            payload = wait_for(result, started + budget)
        except CeleryTimeout:
            share.reason = (f"no rerank worker took the request within {budget:g} s (none is running, or all are busy)"
                            if withdraw_request(result.id) else f"the rerank worker did not answer within {budget:g} s")
        except Exception as exc:  # the task raised (model missing on the worker, ...)
            share.reason = f"the rerank worker failed: {type(exc).__name__}: {str(exc)[:300]}"
        else:
            logits = payload.get("logits") or []
            if len(logits) != len(share.positions):
                share.reason = f"the rerank worker returned {len(logits)} scores for {len(share.positions)} passages"
            else:
                share.reranked, share.logits = True, logits
                share.fusion = ModelFusion.from_dict(payload["fusion"]) if payload.get("fusion") else ModelFusion()
                share.runtime, share.precision = payload.get("runtime"), payload.get("precision")
        share.ms = (time.perf_counter() - started) * 1000
    outcome = RerankOutcome(any(share.reranked for share in shares), shares=shares,
                            ms=(time.perf_counter() - started) * 1000)
    for share in shares:
        if share.reason:
            log.warning("not reranked (%s, %d chunks): %s", share.model, len(share.positions), share.reason)
    if not outcome.reranked:
        reasons = list(dict.fromkeys(share.reason for share in shares))
        outcome.reason = reasons[0] if len(reasons) == 1 else "; ".join(reasons)
    return outcome


def reorder_share(hits: list[Hit], positions: list[int], logits: list[float], fusion: Fusion = Fusion()) -> None:
    """Reorder, in place, the chunks at `positions` (ascending) among those same positions: by
    the model's fusion of its logits' order with the first stage's (reranker/fusion.py; weight
    0: by logit alone, ties in first-stage order). Other positions do not move."""
    chunks = [hits[i] for i in positions]
    for hit, logit in zip(chunks, logits):
        hit.reranker_logit = float(logit)
    for position, i in zip(positions, fusion.order(logits)):
        hits[position] = chunks[i]


def apply_shares(hits: list[Hit], outcome: RerankOutcome, mode: str) -> list[Hit]:
    """The list with each reranked share reordered within its own places."""
    hits = list(hits)
    for share in outcome.shares:
        if share.reranked:
            reorder_share(hits, share.positions, share.logits, share.fusion.for_mode(mode))
    return hits


def apply_logits(hits: list[Hit], logits: list[float], fusion: Fusion = Fusion()) -> list[Hit]:
    """One model's logits for the head (the first len(logits) chunks) applied: the head
    reordered, the rest unchanged."""
    hits = list(hits)
    reorder_share(hits, list(range(len(logits))), logits, fusion)
    return hits


def result_item(hit: Hit, rank: int) -> dict:
    logit = hit.reranker_logit
    return {
        "rank": rank,
        "collection": hit.collection,
        "document_id": hit.document_id,
        "external_id": hit.external_id,
        "title": hit.title,
        "title_html": highlight_html(hit.title_fragment),
        "chunk": hit.chunk,
        "start": hit.start,
        "end": hit.end,
        "snippet": plain_text(hit.fragment),
        "snippet_html": highlight_html(hit.fragment),
        "metadata": hit.metadata,
        "scores": {
            "first_stage": round(hit.score, 6),
            "first_stage_rank": hit.first_stage_rank,
            "semantic_rank": hit.semantic_rank,
            "keyword_rank": hit.keyword_rank,
            "reranker_logit": None if logit is None else round(logit, 6),
            "reranker_sigmoid": None if logit is None else round(sigmoid(logit), 6),
            "final_rank": rank,
        },
        "other_chunks": [],
    }


def build_results(hits: list[Hit], group: bool) -> list[dict]:
    """One result per chunk, or (grouped) per document at the place of its best chunk, with the
    numbers of its other chunks in the list."""
    results: list[dict] = []
    by_document: dict[int, dict] = {}
    for hit in hits:
        if group and hit.document_id in by_document:
            by_document[hit.document_id]["other_chunks"].append(hit.chunk)
            continue
        item = result_item(hit, len(results) + 1)
        by_document[hit.document_id] = item
        results.append(item)
    return results


def snapshot_key(params: SearchParams) -> str:
    what = [params.query, params.mode, sorted(c.slug for c in params.collections), params.metadata,
            params.rerank, params.group, settings.SEARCH_DEPTH, settings.RERANK_TOP_N]
    return "snapshot:" + hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def _cache_get(key: str):
    try:
        return caches["search"].get(key)
    except Exception as exc:  # Redis down: search without the snapshot
        log.warning("search snapshot unavailable: %s", exc)
        return None


def _cache_set(key: str, value: dict) -> None:
    try:
        caches["search"].set(key, value, settings.SEARCH_SNAPSHOT_SECONDS)
    except Exception as exc:
        log.warning("search snapshot not stored: %s", exc)


def ranked_list(params: SearchParams) -> dict:
    """The whole ranked list (every page) with how it was made."""
    stage = first_stage(params.query, params.mode, params.collections, params.metadata)
    hits = stage.hits
    if not params.rerank:
        outcome = RerankOutcome(False, None)
    else:
        outcome = rerank_hits(params.query, hits, {c.slug: c for c in params.collections})
        if outcome.reranked:
            hits = apply_shares(hits, outcome, params.mode)
    results = build_results(hits, params.group)
    single = outcome.shares[0] if len(outcome.shares) == 1 else None
    return {
        "results": results,
        "chunks": len(stage.hits),
        "rerank": {
            "requested": params.rerank,
            "applied": outcome.reranked,
            "not_reranked": None if outcome.reranked or not params.rerank else outcome.reason,
            "model": outcome.model,
            # Chunks sent to the rerankers, and how many of them came back reranked.
            "candidates": outcome.candidates,
            "reranked": outcome.reranked_chunks,
            "runtime": single.runtime if single else None,
            "precision": single.precision if single else None,
            "fusion": single.fusion.for_mode(params.mode).to_dict() if single and single.reranked else None,
            "models": [share.to_dict(params.mode) for share in outcome.shares],
        },
        "timings_ms": {
            "embed": round(stage.embed_ms, 2),
            "elasticsearch": round(stage.es_ms, 2),
            "rerank": round(outcome.ms, 2),
        },
        "query_vector_cached": stage.vector_cached,
    }


def run_search(params: SearchParams) -> dict:
    """One page of results for `params`, with scores, flags and timings (JSON-ready)."""
    started = time.perf_counter()
    key = snapshot_key(params)
    ranked = _cache_get(key) if params.page > 1 else None
    from_snapshot = ranked is not None
    if ranked is None:
        ranked = ranked_list(params)
        if ranked["results"]:
            _cache_set(key, ranked)
    total = len(ranked["results"])
    first = (params.page - 1) * params.k
    timings = dict(ranked["timings_ms"]) if not from_snapshot else {"embed": 0.0, "elasticsearch": 0.0, "rerank": 0.0}
    timings["total"] = round((time.perf_counter() - started) * 1000, 2)
    return {
        "query": params.query,
        "mode": params.mode,
        "collections": [c.slug for c in params.collections],
        "metadata": params.metadata,
        "k": params.k,
        "page": params.page,
        "pages": max(1, -(-total // params.k)),
        "total": total,
        "grouped": params.group,
        "rerank": ranked["rerank"],
        "not_reranked": ranked["rerank"]["not_reranked"],
        "from_snapshot": from_snapshot,
        "query_vector_cached": ranked["query_vector_cached"],
        "timings_ms": timings,
        "results": ranked["results"][first: first + params.k],
    }
