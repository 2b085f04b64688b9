"""A bound on the searches in progress in each web process: past SEARCH_MAX_IN_FLIGHT, a search is
answered at once with 503 and `Retry-After` (JSON for the API, a page for the search page)
instead of waiting for a thread behind searches that are themselves waiting.

A search holds a gunicorn thread for its whole time (the rerank stage waits up to RERANK_TIMEOUT
on the workers). With more threads than the bound (`--threads` above SEARCH_MAX_IN_FLIGHT), the
threads past it stay free to say "busy" in a millisecond: the refusals are fast and honest,
and the searches let in run at the speed of an unloaded site. The figures are in docs/operating.md
("Under load").

What is bounded: the views whose URL names are in BOUNDED_URL_NAMES, matched after URL
resolution (as the rate limit matches its views, searchsite/ratelimit.py), with the kind of
answer each gets. The search page only when it carries a query (the empty form costs nothing).
An app opts its own views in by adding their URL names here, e.g. "api_rerank": "api".
"""
from __future__ import annotations

import threading

from django.conf import settings

from common.service_metrics import SEARCHES_IN_FLIGHT, SEARCHES_REJECTED

BOUNDED_URL_NAMES = {"search": "page", "api_search": "api", "api_rerank": "api"}
# The search page counts only with a query; every other bounded view always.
QUERY_ONLY = {"search"}


class SearchAdmissionMiddleware:
    """Counts the bounded requests in progress in this process; past the bound, 503 at once."""

    def __init__(self, get_response):
        self.get_response = get_response
        self._lock = threading.Lock()
        self.in_flight = 0

    def __call__(self, request):
        try:
            return self.get_response(request)
        finally:
            if getattr(request, "_search_admitted", False):
                request._search_admitted = False
                with self._lock:
                    self.in_flight -= 1
                SEARCHES_IN_FLIGHT.dec()

    def process_view(self, request, view_func, view_args, view_kwargs):
        name = getattr(request.resolver_match, "url_name", None)
        kind = BOUNDED_URL_NAMES.get(name)
        if kind is None or (name in QUERY_ONLY and "q" not in request.GET):
            return None
        bound = settings.SEARCH_MAX_IN_FLIGHT
        with self._lock:
            if bound and self.in_flight >= bound:
                busy = self.in_flight
            else:
                self.in_flight += 1
                busy = None
        if busy is None:
            request._search_admitted = True
            SEARCHES_IN_FLIGHT.inc()
            return None
        SEARCHES_REJECTED.labels(kind).inc()
        return service_busy(request, kind, busy)


def service_busy(request, kind: str, in_flight: int):
    from django.http import JsonResponse
    from django.shortcuts import render
    from django.utils.cache import add_never_cache_headers

    retry_after = settings.SEARCH_RETRY_AFTER
    message = (f"the search is busy: {in_flight} searches are in progress in this web process "
               f"(SEARCH_MAX_IN_FLIGHT); try again in {retry_after} s")
    if kind == "api":
        response = JsonResponse({"error": message}, status=503)
    else:
        response = render(request, "searchsite/503.html", {"message": message, "retry_after": retry_after},
                          status=503)
    response["Retry-After"] = str(retry_after)
    add_never_cache_headers(response)
    return response
