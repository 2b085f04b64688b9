"""A whole search: the first stage (search/retrieval.py), the second (search/rerank_client.py),
grouping per document, pages.

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
from dataclasses import asdict, dataclass, field

from django.conf import settings
from django.core.cache import caches
from django.urls import reverse

from reranker.cross_encoder import sigmoid

from .facets import FacetRequest, facet_keys, parse_facets
from .params import SearchParams
from .rerank_client import RerankOutcome, apply_shares, rerank_hits
from .retrieval import Hit, first_stage, highlight_html, plain_text

log = logging.getLogger(__name__)


@dataclass
class Scores:
    first_stage: float
    first_stage_rank: int
    semantic_rank: int | None
    keyword_rank: int | None
    reranker_logit: float | None
    reranker_sigmoid: float | None
    final_rank: int


@dataclass
class ResultItem:
    """One result: a chunk, or (grouped) a document at the place of its best chunk. The fields,
    in this order, are the API's result object (docs/openapi.yaml)."""
    rank: int
    collection: str
    document_id: int
    external_id: str
    title: str
    title_html: str
    url: str  # the document page, scrolled to this chunk (search/documents.py)
    chunk: int
    start: int
    end: int
    snippet: str
    snippet_html: str
    metadata: dict
    scores: Scores
    other_chunks: list[int] = field(default_factory=list)  # the document's other chunks in the list

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RerankSummary:
    """How the second stage went for the whole list (the API's `rerank` object)."""
    requested: bool
    applied: bool
    not_reranked: str | None
    model: str | None
    candidates: int  # chunks sent to the rerankers
    reranked: int  # of those, how many came back reranked
    runtime: str | None
    precision: str | None
    fusion: dict | None
    models: list[dict]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RankedList:
    """The whole ranked list (every page) with how it was made; what a snapshot stores."""
    results: list[ResultItem]
    chunks: int  # first-stage chunks the results were made from
    rerank: RerankSummary
    timings_ms: dict[str, float]
    query_vector_cached: bool | None
    facets: dict  # search/facets.py parse_facets
    embedding_models: dict[str, str] = field(default_factory=dict)  # collection slug -> bi-encoder
    hybrid_fusion: dict | None = None  # the rule that fused the hybrid lists, and its source


def result_item(hit: Hit, rank: int) -> ResultItem:
    logit = hit.reranker_logit
    return ResultItem(
        rank=rank, collection=hit.collection, document_id=hit.document_id, external_id=hit.external_id,
        title=hit.title, title_html=highlight_html(hit.title_fragment),
        url=f"{reverse('document', args=[hit.document_id])}?chunk={hit.chunk}", chunk=hit.chunk, start=hit.start,
        end=hit.end, snippet=plain_text(hit.fragment), snippet_html=highlight_html(hit.fragment),
        metadata=hit.metadata,
        scores=Scores(
            first_stage=round(hit.score, 6), first_stage_rank=hit.first_stage_rank,
            semantic_rank=hit.semantic_rank, keyword_rank=hit.keyword_rank,
            reranker_logit=None if logit is None else round(logit, 6),
            reranker_sigmoid=None if logit is None else round(sigmoid(logit), 6),
            final_rank=rank,
        ),
    )


def build_results(hits: list[Hit], group: bool) -> list[ResultItem]:
    """One result per chunk, or (grouped) per document at the place of its best chunk, with the
    numbers of its other chunks in the list."""
    results: list[ResultItem] = []
    by_document: dict[int, ResultItem] = {}
    for hit in hits:
        if group and hit.document_id in by_document:
            by_document[hit.document_id].other_chunks.append(hit.chunk)
            continue
        item = result_item(hit, len(results) + 1)
        by_document[hit.document_id] = item
        results.append(item)
    return results


def snapshot_key(params: SearchParams) -> str:
    what = [params.query, params.mode, sorted(c.slug for c in params.collections), params.metadata,
            sorted(c.slug for c in params.scope), params.requested_collections,
            params.rerank, params.group, settings.SEARCH_DEPTH, settings.RERANK_TOP_N,
            [c.hybrid_fusion for c in params.collections], settings.SEARCH_HYBRID_FUSION]
    return "snapshot:" + hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def _cache_get(key: str) -> RankedList | None:
    try:
        ranked = caches["search"].get(key)
    except Exception as exc:  # Redis down: search without the snapshot
        log.warning("search snapshot unavailable: %s", exc)
        return None
    if ranked is not None and not isinstance(ranked, RankedList):
        # Stored by an older version of this code (another shape): searched afresh.
        log.warning("search snapshot %s has an old shape (%s); searching afresh", key, type(ranked).__name__)
        return None
    return ranked


def _cache_set(key: str, value: RankedList) -> None:
    try:
        caches["search"].set(key, value, settings.SEARCH_SNAPSHOT_SECONDS)
    except Exception as exc:
        log.warning("search snapshot not stored: %s", exc)


def ranked_list(params: SearchParams) -> RankedList:
    """The whole ranked list (every page) with how it was made."""
    facets = FacetRequest(scope=params.scope, requested=params.requested_collections, metadata=params.metadata,
                          keys=facet_keys(params.collections))
    stage = first_stage(params.query, params.mode, params.collections, params.metadata, facets=facets)
    hits = stage.hits
    if not params.rerank:
        outcome = RerankOutcome(False, None)
    else:
        outcome = rerank_hits(params.query, hits, {c.slug: c for c in params.collections})
        if outcome.reranked:
            hits = apply_shares(hits, outcome, params.mode)
    single = outcome.shares[0] if len(outcome.shares) == 1 else None
    return RankedList(
        results=build_results(hits, params.group),
        chunks=len(stage.hits),
        rerank=RerankSummary(
            requested=params.rerank,
            applied=outcome.reranked,
            not_reranked=None if outcome.reranked or not params.rerank else outcome.reason,
            model=outcome.model,
            candidates=outcome.candidates,
            reranked=outcome.reranked_chunks,
            runtime=single.runtime if single else None,
            precision=single.precision if single else None,
            fusion=single.fusion.for_mode(params.mode).to_dict() if single and single.reranked else None,
            models=[share.to_dict(params.mode) for share in outcome.shares],
        ),
        timings_ms={
            "embed": round(stage.embed_ms, 2),
            "elasticsearch": round(stage.es_ms, 2),
            "rerank": round(outcome.ms, 2),
        },
        query_vector_cached=stage.vector_cached,
        facets=parse_facets(facets, stage.facets_response),
        embedding_models=stage.collection_models,
        hybrid_fusion=stage.fusion,
    )


def run_search(params: SearchParams) -> dict:
    """One page of results for `params`, with scores, flags and timings (JSON-ready)."""
    started = time.perf_counter()
    key = snapshot_key(params)
    ranked = _cache_get(key) if params.page > 1 else None
    from_snapshot = ranked is not None
    if ranked is None:
        ranked = ranked_list(params)
        if ranked.results:
            _cache_set(key, ranked)
    total = len(ranked.results)
    first = (params.page - 1) * params.k
    timings = dict(ranked.timings_ms) if not from_snapshot else {"embed": 0.0, "elasticsearch": 0.0, "rerank": 0.0}
    timings["total"] = round((time.perf_counter() - started) * 1000, 2)
    rerank = ranked.rerank.to_dict()
    answer = {
        "query": params.query,
        "mode": params.mode,
        "collections": [c.slug for c in params.collections],
        "metadata": params.metadata,
        "k": params.k,
        "page": params.page,
        "pages": max(1, -(-total // params.k)),
        "total": total,
        "grouped": params.group,
        "rerank": rerank,
        "not_reranked": rerank["not_reranked"],
        "from_snapshot": from_snapshot,
        "query_vector_cached": ranked.query_vector_cached,
        "embedding_models": getattr(ranked, "embedding_models", {}),  # snapshots made before the field: none
        "timings_ms": timings,
        "facets": ranked.facets,
        "results": [item.to_dict() for item in ranked.results[first: first + params.k]],
    }
    if params.staff:
        answer["hybrid_fusion"] = getattr(ranked, "hybrid_fusion", None)  # snapshots made before the field: none
    return answer
