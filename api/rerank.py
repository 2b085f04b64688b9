"""POST /api/rerank: (query, passage) pairs scored by the rerank workers, under the search's own
latency budget and admission control (search/rerank_client.rerank_passages)."""
from __future__ import annotations

import json
import math
import time

from django.conf import settings

from indexer.importing import format_bytes
from search.query_text import QUERY_MAX_LENGTH, normalize_query
from search.rerank_client import RerankSaturated, rerank_passages

from .access import ApiError, Caller, unknown_collection

FIELDS = ("query", "documents", "top_n", "collection")


def read_request(request) -> dict:
    content_type = request.META.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(415, f"send the request as application/json, not {content_type[:80] or 'no content type'!r}")
    limit = settings.API_RERANK_MAX_BYTES
    data = request.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, f"the body is over the limit of {format_bytes(limit)} (API_RERANK_MAX_BYTES)")
    try:
        body = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object with {', '.join(FIELDS)}")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0][:60]!r}; the fields are {', '.join(FIELDS)}")
    return body


def check(body: dict, caller: Caller) -> tuple[str, list[str], int, str]:
    """(query, documents, top_n, the collection's own reranker or '') of a request; ApiError 400
    naming the field that is wrong."""
    query = body.get("query")
    if not isinstance(query, str) or not normalize_query(query):
        raise ApiError(400, "query: give the query as a non-empty string")
    query = normalize_query(query)
    if len(query) > QUERY_MAX_LENGTH:
        raise ApiError(400, f"query: longer than {QUERY_MAX_LENGTH} characters ({len(query)})")
    documents = body.get("documents")
    most, longest = settings.API_RERANK_MAX_DOCUMENTS, settings.API_RERANK_MAX_CHARS
    if not isinstance(documents, list) or not documents:
        raise ApiError(400, "documents: give a non-empty list of strings")
    if len(documents) > most:
        raise ApiError(400, f"documents: at most {most} per request (API_RERANK_MAX_DOCUMENTS), not {len(documents)}")
    for index, document in enumerate(documents):
        if not isinstance(document, str) or not document.strip():
            raise ApiError(400, f"documents[{index}]: must be a non-empty string")
        if len(document) > longest:
            raise ApiError(400, f"documents[{index}]: {len(document)} characters; at most {longest} "
                                f"(API_RERANK_MAX_CHARS)")
    top_n = body.get("top_n", len(documents))
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise ApiError(400, f"top_n: a whole number of at least 1, not {str(top_n)[:40]!r}")
    model = ""
    slug = body.get("collection")
    if slug is not None:
        if not isinstance(slug, str) or not slug:
            raise ApiError(400, "collection: a collection's slug")
        collection = caller.searchable().filter(slug=slug).first() if caller.key else \
            caller.readable().filter(slug=slug).first()
        if collection is None:
            raise unknown_collection(slug)
        model = collection.reranker_model.strip()
    return query, documents, min(top_n, len(documents)), model


def sigmoid(logit: float) -> float:
    """1 / (1 + e^-logit), without overflow for large negative logits."""
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    exp = math.exp(logit)
    return exp / (1.0 + exp)


def rerank(body: dict, caller: Caller) -> dict:
    """The answer: the scored documents by score, best first, at most top_n."""
    query, documents, top_n, model = check(body, caller)
    started = time.perf_counter()
    try:
        share = rerank_passages(query, documents, model)
    except RerankSaturated as exc:
        raise ApiError(503, f"{exc}; try again in {exc.retry_after} s", {"Retry-After": str(exc.retry_after)}) from None
    if not share.reranked:
        retry = {"Retry-After": str(max(1, math.ceil(settings.RERANK_TIMEOUT)))} \
            if share.outcome in ("not_taken", "timeout", "expired", "broker") else {}
        raise ApiError(503, f"not reranked: {share.reason}", retry)
    scored = [{"index": index, "score": sigmoid(logit), "logit": logit}
              for index, logit in enumerate(float(v) for v in share.logits)]
    scored.sort(key=lambda item: (-item["logit"], item["index"]))
    return {"results": scored[:top_n], "model": share.model, "runtime": share.runtime,
            "precision": share.precision, "scored": len(scored), "ms": round((time.perf_counter() - started) * 1000, 2)}
