"""A whole search: first stage (searchsite/search.py), the rerank worker within its latency
budget, grouping per document, pages.

Second stage. The query and the texts of the top RERANK_TOP_N chunks go to a `rerank` worker
(reranker/tasks.py); the web process waits at most RERANK_TIMEOUT seconds. Those chunks are
reordered by the cross-encoder's logit (ties keep first-stage order); the chunks below them
follow in first-stage order. When the worker is slow or missing, fails, or no model is set,
the first-stage order is shown with `not_reranked` saying why: never an error page.

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
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches

from reranker.cross_encoder import configured_model, sigmoid
from reranker.fusion import Fusion, ModelFusion

from .params import SearchParams
from .search import Hit, first_stage, highlight_html, plain_text

log = logging.getLogger(__name__)


@dataclass
class RerankOutcome:
    reranked: bool
    reason: str | None = None  # why not, shown as "not reranked: <reason>"
    model: str | None = None
    ms: float = 0.0
    candidates: int = 0
    logits: list[float] | None = None
    fusion: ModelFusion = ModelFusion()  # the model's fusions with the first stage (reranker/fusion.py)


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


def rerank_hits(query: str, hits: list[Hit], collections: dict) -> RerankOutcome:
    """Ask a rerank worker for the logits of the top RERANK_TOP_N hits, within RERANK_TIMEOUT."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    from reranker.tasks import rerank

    head = hits[: settings.RERANK_TOP_N]
    if not head:
        return RerankOutcome(False, "no results to rerank")
    own_models = {collections[h.collection].reranker_model.strip() for h in head}
    effective = {configured_model(m) for m in own_models}
    if len(effective) > 1:
        return RerankOutcome(False, "the results come from collections with different reranker models")
    model = effective.pop()
    # A collection's own model is named in the message; otherwise "" lets the worker use its
    # RERANKER_MODEL setting.
    sent_model = next((m for m in own_models if m), "")
    if not model:
        return RerankOutcome(False, "no reranker model configured")
    budget = settings.RERANK_TIMEOUT
    started = time.perf_counter()
    outcome = RerankOutcome(False, model=model, candidates=len(head))
    try:
        # `expires`: a worker that takes the message after the budget drops it instead of
        # scoring for nobody (at least 1 s, for clocks of different hosts that disagree a
        # little). `retry=False`: a broker that is down fails now, not after retries.
        result = rerank.apply_async(args=[query, [passage_text(h) for h in head], sent_model],
                                    queue=settings.RERANK_QUEUE, expires=max(budget, 1.0), retry=False)
    except Exception as exc:
        outcome.reason = f"the task broker is unreachable ({type(exc).__name__})"
        outcome.ms = (time.perf_counter() - started) * 1000
        return outcome
    try:
        payload = wait_for(result, started + budget)
    except CeleryTimeout:
        outcome.reason = (f"no rerank worker took the request within {budget:g} s (none is running, or all are busy)"
                          if withdraw_request(result.id) else f"the rerank worker did not answer within {budget:g} s")
    except Exception as exc:  # the task raised (model missing on the worker, ...)
        outcome.reason = f"the rerank worker failed: {type(exc).__name__}: {str(exc)[:300]}"
    else:
        logits = payload.get("logits") or []
        if len(logits) != len(head):
            outcome.reason = f"the rerank worker returned {len(logits)} scores for {len(head)} passages"
        else:
            outcome.reranked, outcome.logits, outcome.model = True, logits, payload.get("model", model)
            outcome.fusion = ModelFusion.from_dict(payload["fusion"]) if payload.get("fusion") else ModelFusion()
    outcome.ms = (time.perf_counter() - started) * 1000
    if outcome.reason:
        log.warning("not reranked: %s", outcome.reason)
    return outcome


def apply_logits(hits: list[Hit], logits: list[float], fusion: Fusion = Fusion()) -> list[Hit]:
    """The reranked head, then the rest unchanged. The head's order is the model's fusion of its
    logits' order with the first stage's (reranker/fusion.py; weight 0: by logit alone, ties in
    first-stage order)."""
    head, tail = hits[: len(logits)], hits[len(logits):]
    for hit, logit in zip(head, logits):
        hit.reranker_logit = float(logit)
    return [head[i] for i in fusion.order(logits)] + tail


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
            hits = apply_logits(hits, outcome.logits, outcome.fusion.for_mode(params.mode))
    results = build_results(hits, params.group)
    return {
        "results": results,
        "chunks": len(stage.hits),
        "rerank": {
            "requested": params.rerank,
            "applied": outcome.reranked,
            "not_reranked": None if outcome.reranked or not params.rerank else outcome.reason,
            "model": outcome.model,
            "candidates": outcome.candidates,
            "fusion": outcome.fusion.for_mode(params.mode).to_dict() if outcome.reranked else None,
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
