"""The search page and the JSON API: one search each, bad input a 400, a backend down a 503."""
import logging
import time

from django.conf import settings
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.utils.http import urlencode
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import page_hooks, search_hooks
from .documents import document_view, visible_document
from .errors import SearchBackendError
from .params import BadParameter, parse
from .results import run_search
from .retrieval import MODES, visible_collections

logger = logging.getLogger(__name__)


def _search(request, *, query_required: bool, channel: str):
    """(params, response body, HTTP status) of a search request; never raises for bad input or
    a backend that is down. A search that ran is told to the listeners (search/search_hooks.py)."""
    started = time.perf_counter()
    try:
        # An API key's collections (request.collection_scope, set by api/middleware.py) replace the user's.
        params = parse(request.GET, request.user, query_required=query_required,
                       scope=getattr(request, "collection_scope", None))
    except BadParameter as exc:
        return None, {"error": str(exc)}, 400
    if not params.query:
        return params, None, 200
    try:
        answer = run_search(params)
    except SearchBackendError as exc:
        logger.error("search failed: %s", exc)
        return params, {"error": f"search is unavailable right now: {exc.public}; please try again in a minute"}, 503
    search_hooks.searched(request, channel, params, answer, (time.perf_counter() - started) * 1000)
    return params, answer, 200


@never_cache
@require_GET
def api_search(request):
    """GET /api/search?q=&mode=&collection=&k=&rerank=&page=  (docs/api.md, docs/openapi.yaml)."""
    _, body, status = _search(request, query_required=True, channel="api")
    return JsonResponse(body, status=status, json_dumps_params={"ensure_ascii": False})


PAGE_SIZES = (10, 20, 50)


def _url_without(query_dict, drop: set[str], add: list[tuple[str, str]] = ()) -> str:
    """`?` + the request's parameters less the names in `drop`, plus `add`: every other filter,
    the grouping and the page size are kept."""
    query = [(key, value) for key in query_dict for value in query_dict.getlist(key) if key not in drop]
    return "?" + urlencode(query + list(add))


def _facet_links(query_dict, params, facets: dict, names: dict[str, str]) -> dict:
    """Each facet value with the URL that chooses it (or unchooses it, when chosen), page 1."""
    def toggled(name: str, chosen: list[str], value: str) -> str:
        values = [v for v in chosen if v != value] if value in chosen else chosen + [value]
        return _url_without(query_dict, {name, "page"}, [(name, v) for v in values])

    collection = [dict(v, label=names.get(v["value"], v["value"]),
                       url=toggled("collection", list(params.requested_collections), v["value"]))
                  for v in facets["collection"]]
    metadata = [{"key": key, "values": [dict(v, label=v["value"],
                                            url=toggled(f"meta.{key}", list(params.metadata.get(key, [])), v["value"]))
                                       for v in values]}
                for key, values in facets["metadata"].items() if values]
    return {"counts": facets["counts"], "collection": collection, "metadata": metadata}


@never_cache
@require_GET
def search_page(request):
    params, body, status = _search(request, query_required=False, channel="page")
    collections = list(visible_collections(request.user).order_by("name"))
    k = params.k if params else settings.SEARCH_PAGE_SIZE
    context = {
        "modes": MODES,
        "collections": collections,
        "q": request.GET.get("q", ""),
        "mode": params.mode if params else request.GET.get("mode", settings.SEARCH_DEFAULT_MODE),
        "selected": set(params.requested_collections) if params else set(request.GET.getlist("collection")),
        "rerank_on": params.rerank if params else request.GET.get("rerank", "on") not in ("0", "off", "false", "no"),
        "group_on": params.group if params else request.GET.get("group", "on") not in ("0", "off", "false", "no"),
        "k": k,
        "page_sizes": sorted({*(n for n in PAGE_SIZES if n <= settings.SEARCH_MAX_PAGE_SIZE), k}),
        # The metadata filters travel with the form as hidden fields (the facets choose them).
        "meta_filters": [(f"meta.{key}", value) for key, values in sorted(params.metadata.items()) for value in values]
                        if params else [],
        "clear_filters_url": _url_without(request.GET, {"page"} | {n for n in request.GET if n.startswith("meta.")}),
        "error": body.get("error") if body and status != 200 else None,
        "search": body if status == 200 else None,
    }
    if params and body and status == 200:
        def page_url(number):
            return _url_without(request.GET, {"page"}, [("page", number)])

        context["page_links"] = [{"number": n, "url": page_url(n), "current": n == params.page}
                                 for n in range(1, body["pages"] + 1)]
        context["prev_url"] = page_url(params.page - 1) if params.page > 1 else None
        context["next_url"] = page_url(params.page + 1) if params.page < body["pages"] else None
        context["facets"] = _facet_links(request.GET, params, body["facets"], {c.slug: c.name for c in collections})
        context["results"] = body["results"]
        page_hooks.apply(request, context)
    return render(request, "search/search.html", context, status=status)


@never_cache
@require_GET
def document_page(request, document_id: int):
    """GET /documents/<id>?chunk=N: the document with chunk N marked; 404 for a document the user
    may not see (the same as one that does not exist), 400 for a chunk that is not a number."""
    raw_chunk = request.GET.get("chunk", "")
    chunk_number = None
    if raw_chunk != "":
        try:
            chunk_number = int(raw_chunk)
        except ValueError:
            return render(request, "search/error.html",
                          {"error": f"chunk must be a whole number, not {raw_chunk[:40]!r}"}, status=400)
    document = visible_document(request.user, document_id)
    if document is None:
        raise Http404("No such document.")
    view = document_view(document, chunk_number)
    status = 404 if chunk_number is not None and view.chunk is None and view.chunks else 200
    return render(request, "search/document.html", {"view": view, "d": document}, status=status)
