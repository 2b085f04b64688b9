"""Clicks: GET /click (the search page's result links) and POST /api/clicks (API clients)."""
from __future__ import annotations

import json
import logging

from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .models import Channel
from .search_log import BadClick, UnknownSearch, record_click

logger = logging.getLogger(__name__)


def _whole_number(value, name: str) -> int:
    """A positive whole number, or BadClick naming the field (bool is not a number here)."""
    if isinstance(value, bool) or value in (None, ""):
        raise BadClick(f"{name} must be a whole number of 1 or more, not {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadClick(f"{name} must be a whole number of 1 or more, not {str(value)[:40]!r}") from None
    if isinstance(value, float) or number < 1:
        raise BadClick(f"{name} must be a whole number of 1 or more, not {value!r}")
    return number


@never_cache
@require_GET
def click(request):
    """GET /click?search=&rank=&document=&chunk=: log the click, then 302 to the document page.

    The target is always this site's page of `document`, built here, never a URL taken from the
    request (no open redirect). A click that cannot be logged (its search pruned, say) still
    leads to the document: the link never breaks."""
    try:
        document = _whole_number(request.GET.get("document"), "document")
        rank = _whole_number(request.GET.get("rank"), "rank")
        raw_chunk = request.GET.get("chunk", "")
        if raw_chunk and not raw_chunk.isdigit():
            raise BadClick(f"chunk must be a whole number, not {raw_chunk[:40]!r}")
        chunk = int(raw_chunk) if raw_chunk else None
    except BadClick as exc:
        return render(request, "search/error.html", {"error": str(exc)}, status=400)
    target = reverse("document", args=[document]) + (f"?{urlencode({'chunk': chunk})}" if chunk is not None else "")
    try:
        record_click(request.GET.get("search", ""), channel=Channel.PAGE, rank=rank, document=document)
    except (UnknownSearch, BadClick) as exc:
        logger.warning("click not logged: %s", exc)
    return HttpResponseRedirect(target)


@csrf_exempt  # an API call, not a form: it names an unguessable search id (no cookie authority)
@never_cache
@require_POST
def api_click(request):
    """POST /api/clicks {"search_id", "rank"} or {"search_id", "document"} (or both, agreeing)."""
    try:
        body = json.loads(request.body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return JsonResponse({"error": f"the body is not JSON: {exc}"}, status=400)
    if not isinstance(body, dict):
        return JsonResponse({"error": 'the body must be a JSON object: {"search_id": ..., "rank": ...}'}, status=400)
    unknown = sorted(set(body) - {"search_id", "rank", "document"})
    if unknown:
        return JsonResponse({"error": f"unknown field {unknown[0]!r} (search_id, rank, document)"}, status=400)
    search_id = body.get("search_id")
    if not isinstance(search_id, str) or not search_id:
        return JsonResponse({"error": "search_id: give the search_id of the search answer"}, status=400)
    try:
        rank = None if body.get("rank") is None else _whole_number(body["rank"], "rank")
        document = None if body.get("document") is None else _whole_number(body["document"], "document")
        clicked = record_click(search_id, channel=Channel.API, rank=rank, document=document)
    except BadClick as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    except UnknownSearch as exc:
        return JsonResponse({"error": str(exc)}, status=404)
    return JsonResponse({"search_id": search_id, "rank": clicked.rank, "document": clicked.document_id}, status=201)
