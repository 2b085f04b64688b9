"""Facets: how many documents each collection and each facetable metadata value holds, counted
by Elasticsearch aggregations in the same msearch as the first stage (search/retrieval.py).

What is counted: documents (a `cardinality` of `document_id` under each bucket, exact up to
PRECISION_THRESHOLD documents per value), never chunks, in the API and on the page alike.

Of which documents:
    keyword, hybrid  those whose text has the query's words (the BM25 clause of the first
                     stage). For hybrid this is the BM25 side only: kNN has no notion of a
                     match (every chunk is some query's neighbour, and aggregations over a kNN
                     search count only its k nearest chunks, which say nothing about a value
                     the user has not selected yet).
    semantic         every document in scope, for the same reason.
    A query of stop words only has no BM25 clause: keyword mode finds nothing and shows no
    facets; hybrid (whose kNN side still finds chunks) counts every document in scope.

The facet search is one extra size-0 search whose query carries the access filter (every
collection the user may see, so that the collection facet can offer the others). Each facet is
a `filter` aggregation holding the user's other selections, not its own: the counts of a facet
say what choosing another of its values would give (multi-select facets), and a value already
chosen stays on the page to be unchosen.

Which metadata keys: those the collections searched declare in Collection.facet_fields (admin).
"""
from __future__ import annotations

from dataclasses import dataclass

FACET_SIZE = 20  # values shown per facet, most documents first
PRECISION_THRESHOLD = 40000  # Elasticsearch's maximum: counts are exact below it
COLLECTION = "collection"


@dataclass
class FacetRequest:
    scope: list  # every Collection the user may see
    requested: list[str]  # the collections the user chose ([] = all of scope)
    metadata: dict[str, list[str]]  # the metadata values the user chose, per key
    keys: list[str]  # the facetable metadata keys of the collections searched


def facet_keys(collections) -> list[str]:
    """The union of the facetable keys the collections declare, in order of first declaration."""
    keys: list[str] = []
    for collection in collections:
        for key in collection.facet_keys:
            if key not in keys:
                keys.append(key)
    return keys


def _terms(field: str) -> dict:
    return {"terms": {"field": field, "size": FACET_SIZE, "order": [{"documents": "desc"}, {"_key": "asc"}]},
            "aggs": {"documents": {"cardinality": {"field": "document_id",
                                                   "precision_threshold": PRECISION_THRESHOLD}}}}


def _selections(request: FacetRequest) -> dict[str, dict]:
    """The user's choices as filter clauses, by the field they choose on."""
    chosen = {}
    if request.requested:
        chosen[COLLECTION] = {"terms": {"collection": sorted(request.requested)}}
    for key, values in sorted(request.metadata.items()):
        chosen[f"metadata.{key}"] = {"terms": {f"metadata.{key}": list(values)}}
    return chosen


def facet_body(request: FacetRequest, match: dict | None) -> dict:
    """The size-0 search: the access filter and `match` (None: every document in scope) as its
    query, one filter aggregation per facet named by position (agg names exclude some characters
    that metadata keys may hold)."""
    chosen = _selections(request)
    fields = [COLLECTION] + [f"metadata.{key}" for key in request.keys]
    aggs = {}
    for position, field in enumerate(fields):
        others = [clause for name, clause in chosen.items() if name != field]
        aggs[f"f{position}"] = {"filter": {"bool": {"filter": others}}, "aggs": {"values": _terms(field)}}
    query = {"bool": {"filter": [{"terms": {COLLECTION: sorted(c.slug for c in request.scope)}}]}}
    if match is not None:
        query["bool"]["must"] = [match]
    return {"size": 0, "track_total_hits": False, "query": query, "aggs": aggs}


def parse_facets(request: FacetRequest, response: dict | None) -> dict:
    """The JSON of the API's `facets` (docs/openapi.yaml): values with their document counts and
    whether the user chose them; a chosen value no document has any more is still listed (0)."""
    aggregations = (response or {}).get("aggregations") or {}
    chosen = {COLLECTION: set(request.requested)}
    chosen.update({f"metadata.{key}": set(values) for key, values in request.metadata.items()})
    fields = [COLLECTION] + [f"metadata.{key}" for key in request.keys]
    facets = {}
    for position, field in enumerate(fields):
        buckets = aggregations.get(f"f{position}", {}).get("values", {}).get("buckets", [])
        values = [{"value": str(b["key"]), "documents": b["documents"]["value"],
                   "selected": str(b["key"]) in chosen.get(field, set())} for b in buckets]
        listed = {v["value"] for v in values}
        values += [{"value": v, "documents": 0, "selected": True} for v in sorted(chosen.get(field, set()) - listed)]
        facets[field] = values
    return {
        "counts": "documents",
        "collection": facets.pop(COLLECTION),
        "metadata": {field[len("metadata."):]: values for field, values in facets.items()},
    }
