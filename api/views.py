"""The API's endpoints (docs/api.md, docs/openapi.yaml). GET /api/search is the query path's own
view (search/views.py); api/middleware.py hands it a key's collections.

Plain Django views rather than Django REST framework: docs/api.md says why."""
from __future__ import annotations

import logging
from functools import wraps

from django.db.models import Count, Q
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from indexer.lookups import serving
from indexer.models import Document
from reranker.cross_encoder import configured_model

from .access import ApiError, Caller
from .documents import check_document_id, document_body, read_body, write_documents
from .rerank import read_request, rerank
from .responses import error_response, json_response

log = logging.getLogger(__name__)


def _csrf_refusal(request):
    """A browser session's write must carry the CSRF token (a key's need not: no cookie
    authenticates it); the refusal's reason, or None."""
    response = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
    return None if response is None else "CSRF check failed: send the csrftoken cookie's value in X-CSRFToken"


def api_view(*methods: str):
    """A JSON endpoint taking `methods`: 405 for others, ApiError as its status and message,
    the CSRF check for sessions' writes."""
    def decorate(view):
        @csrf_exempt
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in methods:
                return error_response(405, f"{request.method} is not allowed here; use {' or '.join(methods)}",
                                      {"Allow": ", ".join(methods)})
            caller = Caller.of(request)
            if request.method not in ("GET", "HEAD") and caller.signed_in:
                refusal = _csrf_refusal(request)
                if refusal:
                    return error_response(403, refusal)
            try:
                return view(request, caller, *args, **kwargs)
            except ApiError as exc:
                if exc.status >= 500:
                    log.warning("%s %s (%s): %s", request.method, request.path, caller.who, exc)
                return error_response(exc.status, str(exc), exc.headers)
        return wrapper
    return decorate


@api_view("GET")
def collections(request, caller: Caller):
    """GET /api/collections: the collections the caller may read."""
    caller.require_identity()
    rows = caller.readable().order_by("slug").annotate(
        document_count=Count("documents", distinct=True),
        indexed_count=Count("documents", filter=Q(documents__status=Document.Status.INDEXED), distinct=True))
    answer = []
    for collection in rows:
        own = collection.reranker_model.strip()
        model, language = serving(collection)  # the live index's, which searches use
        answer.append({
            "slug": collection.slug, "name": collection.name, "language": language,
            "visibility": collection.visibility, "documents": collection.document_count,
            "indexed": collection.indexed_count, "embedding_model": model,
            "reranker": {"installed": bool(own), "model": configured_model(own) or None},
            "writable": caller.may_write("change"),
        })
    return json_response({"collections": answer})


@api_view("POST")
def post_documents(request, caller: Caller, slug: str):
    """POST /api/collections/<slug>/documents: create or update documents."""
    collection = caller.collection(slug, write="change")
    data, ndjson = read_body(request)
    answer, status = write_documents(collection, data, ndjson)
    log.info("%s wrote to %s: %d created, %d updated, %d unchanged, %d errors", caller.who, collection.slug,
             answer["created"], answer["updated"], answer["unchanged"], answer["error"])
    return json_response(answer, status)


@api_view("GET", "DELETE")
def document(request, caller: Caller, slug: str, document_id: str):
    """GET or DELETE /api/collections/<slug>/documents/<id>."""
    collection = caller.collection(slug, write="delete" if request.method == "DELETE" else None)
    external_id = check_document_id(document_id)
    row = Document.objects.filter(collection=collection, external_id=external_id).select_related("collection").first()
    if row is None:
        raise ApiError(404, f"no document {external_id[:100]!r} in collection {collection.slug!r}")
    if request.method == "GET":
        return json_response(document_body(row))
    row.delete()  # the pre_delete signal queues the removal of its chunks (indexer/signals.py)
    log.info("%s deleted %s/%s", caller.who, collection.slug, external_id)
    return json_response({"collection": collection.slug, "id": external_id, "result": "deleted"})


@api_view("POST")
def rerank_view(request, caller: Caller):
    """POST /api/rerank."""
    caller.require_identity()
    return json_response(rerank(read_request(request), caller))
