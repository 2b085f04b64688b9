"""Writing the search log: a row per search (a search_hooks listener), click links on the page,
clicks from the page and the API, and pruning past SEARCH_LOG_DAYS."""
from __future__ import annotations

import logging
import re
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from search.query_text import normalize_query

from .models import Channel, SearchClick, SearchLog

logger = logging.getLogger(__name__)

# The session key Django keeps the anonymous id under (a random token, never the session key
# itself, which is the login cookie's secret), and the header an API client may send instead.
SESSION_KEY = "analytics_session"
SESSION_HEADER = "HTTP_X_SEARCH_SESSION"
_SESSION_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def check_settings() -> list[str]:
    problems = []
    if not isinstance(settings.SEARCH_LOG_DAYS, int) or settings.SEARCH_LOG_DAYS < 1:
        problems.append(f"SEARCH_LOG_DAYS must be a whole number of days, 1 or more, not {settings.SEARCH_LOG_DAYS!r}")
    return problems


def session_id(request, channel: str) -> str:
    """The page gives every visitor a random id kept in their session; an API client may name
    its own in the X-Search-Session header (letters, digits, `_.-`, at most 64), else it is the
    browser session's id if it has one, else empty."""
    if channel == Channel.API:
        given = request.META.get(SESSION_HEADER, "")
        if _SESSION_ID.match(given):
            return given
        return request.session.get(SESSION_KEY, "") if hasattr(request, "session") else ""
    if not hasattr(request, "session"):
        return ""
    if SESSION_KEY not in request.session:
        request.session[SESSION_KEY] = secrets.token_urlsafe(12)
    return request.session[SESSION_KEY]


def log_search(request, channel: str, params, answer: dict, elapsed_ms: float) -> None:
    """A search_hooks listener: one SearchLog row per search; the answer gains its `search_id`.
    A log that cannot be written costs the search nothing but the id (and an error line)."""
    if not settings.SEARCH_LOG_ENABLED:
        return
    results = answer["results"]
    try:
        with transaction.atomic():
            row = SearchLog.objects.create(
                channel=channel, query=normalize_query(params.query), mode=params.mode, page=params.page,
                result_count=answer["total"], reranked=bool(answer["rerank"]["applied"]),
                latency_ms=round(elapsed_ms, 2), session=session_id(request, channel),
                first_rank=results[0]["rank"] if results else (params.page - 1) * params.k + 1,
                shown=[r["document_id"] for r in results],
            )
            through = SearchLog.collections.through
            through.objects.bulk_create([through(searchlog_id=row.pk, collection_id=c.pk) for c in params.collections])
    except DatabaseError:
        logger.exception("search log: the search for %r was not logged", params.query[:80])
        return
    answer["search_id"] = str(row.pk)


def add_click_links(request, context: dict) -> None:
    """A search_page hook: each result's link goes through /click (analytics/views.py), which
    logs the click and redirects to the document page; a plain link, no JavaScript."""
    search_id = (context.get("search") or {}).get("search_id")
    if not search_id:
        return
    base = reverse("analytics:click")
    context["results"] = [
        dict(r, click_url=base + "?" + urlencode({"search": search_id, "rank": r["rank"],
                                                  "document": r["document_id"], "chunk": r["chunk"]}))
        for r in context["results"]
    ]


class UnknownSearch(LookupError):
    """No logged search has this id (never had, or pruned)."""


class BadClick(ValueError):
    """A click that does not fit its search (a rank or document it did not show)."""


def find_search(search_id: str) -> SearchLog:
    try:
        return SearchLog.objects.get(pk=search_id)
    except (SearchLog.DoesNotExist, ValidationError):  # ValidationError: not a UUID
        raise UnknownSearch(f"no search with id {search_id!r} is logged (a wrong id, or pruned after "
                            f"SEARCH_LOG_DAYS)") from None


def record_click(search_id: str, *, channel: str, rank: int | None = None, document: int | None = None) -> SearchClick:
    """Log a click on a result of a logged search, named by its rank, its document or both
    (then they must agree)."""
    search = find_search(search_id)
    if rank is None and document is None:
        raise BadClick("give the rank or the document of the result clicked")
    if rank is not None:
        at_rank = search.document_at(rank)
        if at_rank is None:
            last = search.first_rank + len(search.shown) - 1
            raise BadClick(f"rank {rank} was not shown by this search (it showed ranks "
                           f"{search.first_rank} to {last})" if search.shown else
                           f"rank {rank} was not shown by this search (it showed no results)")
        if document is not None and document != at_rank:
            raise BadClick(f"rank {rank} of this search is document {at_rank}, not {document}")
        document = at_rank
    else:
        rank = search.rank_of(document)
        if rank is None:
            raise BadClick(f"document {document} was not among this search's results")
    return SearchClick.objects.create(search=search, rank=rank, document_id=document, channel=channel)


def prune(days: int | None = None) -> int:
    """Delete searches (with their clicks) older than `days` (SEARCH_LOG_DAYS); how many."""
    days = settings.SEARCH_LOG_DAYS if days is None else days
    deleted, by_model = SearchLog.objects.filter(created_at__lt=timezone.now() - timedelta(days=days)).delete()
    return by_model.get(SearchLog._meta.label, 0)
