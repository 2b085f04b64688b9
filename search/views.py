"""The search page and the JSON API: one search each, bad input a 400, a backend down a 503."""
import logging

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render
from django.utils.http import urlencode
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .errors import SearchBackendError
from .params import BadParameter, parse
from .results import run_search
from .retrieval import MODES, visible_collections

logger = logging.getLogger(__name__)


def _search(request, *, query_required: bool):
    """(params, response body, HTTP status) of a search request; never raises for bad input or
    a backend that is down."""
    try:
        params = parse(request.GET, request.user, query_required=query_required)
    except BadParameter as exc:
        return None, {"error": str(exc)}, 400
    if not params.query:
        return params, None, 200
    try:
        return params, run_search(params), 200
    except SearchBackendError as exc:
        logger.error("search failed: %s", exc)
        return params, {"error": f"search is unavailable right now: {str(exc)[:300]}"}, 503


@never_cache
@require_GET
def api_search(request):
    """GET /api/search?q=&mode=&collection=&k=&rerank=&page=  (README "Search: web page and JSON API", docs/openapi.yaml)."""
    _, body, status = _search(request, query_required=True)
    return JsonResponse(body, status=status, json_dumps_params={"ensure_ascii": False})


@never_cache
@require_GET
def search_page(request):
    params, body, status = _search(request, query_required=False)
    context = {
        "modes": MODES,
        "collections": list(visible_collections(request.user).order_by("name")),
        "q": request.GET.get("q", ""),
        "mode": params.mode if params else request.GET.get("mode", settings.SEARCH_DEFAULT_MODE),
        "selected": set(params.requested_collections) if params else set(request.GET.getlist("collection")),
        "rerank_on": params.rerank if params else request.GET.get("rerank", "on") not in ("0", "off", "false", "no"),
        "k": params.k if params else settings.SEARCH_PAGE_SIZE,
        "error": body.get("error") if body and status != 200 else None,
        "search": body if status == 200 else None,
    }
    if params and body and status == 200:
        def page_url(number):
            query = [(key, value) for key in request.GET for value in request.GET.getlist(key) if key != "page"]
            return "?" + urlencode(query + [("page", number)])

        context["page_links"] = [{"number": n, "url": page_url(n), "current": n == params.page}
                                 for n in range(1, body["pages"] + 1)]
        context["prev_url"] = page_url(params.page - 1) if params.page > 1 else None
        context["next_url"] = page_url(params.page + 1) if params.page < body["pages"] else None
    return render(request, "search/search.html", context, status=status)
