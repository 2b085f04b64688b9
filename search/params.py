"""The parameters of a search (page and API alike), checked; every bad value is a BadParameter
with a message that names the parameter."""
from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field

from django.conf import settings

from indexer.models import METADATA_KEY

from .query_text import QUERY_MAX_LENGTH, normalize_query
from .retrieval import MODES, visible_collections

KNOWN = {"q", "mode", "collection", "k", "page", "rerank", "group"}
META_PREFIX = "meta."
META_VALUE_MAX = 200
META_MAX_FILTERS = 10
TRUE = {"1", "true", "on", "yes"}
FALSE = {"0", "false", "off", "no"}


class BadParameter(ValueError):
    pass


@dataclass
class SearchParams:
    query: str
    mode: str
    collections: list  # Collection objects the user may see, in slug order
    requested_collections: list[str]  # what the request named ("" = all the user may see)
    k: int
    page: int
    rerank: bool
    group: bool
    metadata: dict[str, list[str]] = field(default_factory=dict)
    scope: list = field(default_factory=list)  # every Collection the user may see, in slug order (facets)
    staff: bool = False  # the answer then says how it was made (the hybrid fusion rule)

    @property
    def max_page(self) -> int:
        return max_page(self.k)


def max_page(k: int) -> int:
    """Pages are cut from the SEARCH_DEPTH first-stage chunks, so there are never more."""
    return max(1, math.ceil(settings.SEARCH_DEPTH / k))


def _single(params, name: str, default: str | None = None) -> str | None:
    values = params.getlist(name)
    if len(values) > 1:
        raise BadParameter(f"{name}: give it once, not {len(values)} times")
    return values[0] if values else default


def _boolean(params, name: str, default: bool) -> bool:
    raw = _single(params, name)
    if raw is None or raw == "":
        return default
    if raw.lower() in TRUE:
        return True
    if raw.lower() in FALSE:
        return False
    raise BadParameter(f"{name} must be on or off (1/0, true/false), not {raw[:40]!r}")


def _integer(params, name: str, default: int, low: int, high: int) -> int:
    raw = _single(params, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParameter(f"{name} must be a whole number between {low} and {high}, not {raw[:40]!r}") from None
    if not low <= value <= high:
        raise BadParameter(f"{name} must be between {low} and {high}, not {value}")
    return value


def parse_query(params, required: bool) -> str:
    raw = _single(params, "q", "") or ""
    if any(unicodedata.category(ch) == "Cc" and not ch.isspace() for ch in raw):
        raise BadParameter("q: the query contains control characters")
    query = normalize_query(raw)
    if len(query) > QUERY_MAX_LENGTH:
        raise BadParameter(f"q: the query is longer than {QUERY_MAX_LENGTH} characters ({len(query)})")
    if required and not query:
        raise BadParameter("q: the query is empty")
    return query


def parse(params, user, *, query_required: bool = True, scope=None) -> SearchParams:
    """Check a QueryDict (request.GET). `query_required=False` lets the page show its empty form.
    `scope`: the collections the request may search when they are not the user's (an API key's,
    api/middleware.py)."""
    unknown = sorted(name for name in params if name not in KNOWN and not name.startswith(META_PREFIX))
    if unknown:
        raise BadParameter(f"unknown parameter {unknown[0][:40]!r}; known: {', '.join(sorted(KNOWN))}, meta.<key>")
    query = parse_query(params, query_required)

    mode = (_single(params, "mode") or "").strip().lower() or settings.SEARCH_DEFAULT_MODE
    if mode not in MODES:
        raise BadParameter(f"mode must be one of {', '.join(MODES)}, not {mode[:40]!r}")

    # collection=a&collection=b or collection=a,b; empty = everything the user may see.
    requested = sorted({slug.strip() for value in params.getlist("collection") for slug in value.split(",")
                        if slug.strip()})
    visible = {c.slug: c for c in (visible_collections(user) if scope is None else scope)}
    for slug in requested:
        if slug not in visible:
            # The same answer for a collection that does not exist and one the user may not
            # see: its existence is not revealed either.
            raise BadParameter(f"collection: unknown collection {slug[:100]!r}")
    collections = [visible[s] for s in (requested or sorted(visible))]

    k = _integer(params, "k", settings.SEARCH_PAGE_SIZE, 1, settings.SEARCH_MAX_PAGE_SIZE)
    page = _integer(params, "page", 1, 1, max_page(k))

    metadata: dict[str, list[str]] = {}
    for name in params:
        if not name.startswith(META_PREFIX):
            continue
        key = name[len(META_PREFIX):]
        if not METADATA_KEY.match(key):
            raise BadParameter(f"{name[:60]!r}: metadata keys are letters, digits, '_', '.', '-' (at most 100)")
        values = [v for v in params.getlist(name) if v != ""]
        if not values:
            raise BadParameter(f"{name}: give a value")
        if any(len(v) > META_VALUE_MAX for v in values):
            raise BadParameter(f"{name}: values are at most {META_VALUE_MAX} characters")
        metadata[key] = values
    if len(metadata) > META_MAX_FILTERS:
        raise BadParameter(f"at most {META_MAX_FILTERS} metadata filters")

    return SearchParams(
        query=query, mode=mode, collections=collections, requested_collections=requested, k=k, page=page,
        rerank=_boolean(params, "rerank", True), group=_boolean(params, "group", True), metadata=metadata,
        scope=[visible[s] for s in sorted(visible)],
        staff=bool(user is not None and user.is_authenticated and user.is_active and user.is_staff),
    )
