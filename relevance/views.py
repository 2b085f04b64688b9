"""Staff record a relevance judgment from a search result (the "relevant / not relevant" buttons).

POST /judgments/record   (CSRF-protected form post; staff only)
    collection  slug of the collection
    query       the query text as searched
    document    the document's external id
    grade       0 (not relevant) .. MAX_GRADE; "relevant"/"not-relevant" are accepted too
    next        optional: a local URL to redirect back to (the search page); else JSON

Answers 201 (created) or 200 (updated) with the judgment as JSON, 400 with a message on bad
input (a collection the user may not search is an unknown one), 403 for non-staff. The same (collection, query, document) is updated, never duplicated.
"""
from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponseRedirect, JsonResponse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from indexer.models import Document
from search.retrieval import visible_collections

from .models import MAX_GRADE, QUERY_MAX_LENGTH, Judgment, normalize_query

GRADE_WORDS = {"relevant": 1, "not-relevant": 0, "not_relevant": 0}


def _error(message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@require_POST
def record_judgment(request):
    if not (request.user.is_authenticated and request.user.is_staff):
        return _error("only staff can record judgments", status=403)
    query = normalize_query(request.POST.get("query", ""))
    if not query:
        return _error("query is required")
    if len(query) > QUERY_MAX_LENGTH:
        return _error(f"query is longer than {QUERY_MAX_LENGTH} characters")
    raw_grade = request.POST.get("grade", "").strip().lower()
    grade = GRADE_WORDS.get(raw_grade)
    if grade is None:
        try:
            grade = int(raw_grade)
        except ValueError:
            return _error(f"grade must be an integer 0..{MAX_GRADE}, 'relevant' or 'not-relevant'")
    if not 0 <= grade <= MAX_GRADE:
        return _error(f"grade must be between 0 and {MAX_GRADE}")
    # A collection the user may not search is answered like one that does not exist.
    collection = visible_collections(request.user).filter(slug=request.POST.get("collection", "")).first()
    if collection is None:
        return _error("unknown collection")
    document = Document.objects.filter(collection=collection, external_id=request.POST.get("document", "")).first()
    if document is None:
        return _error("unknown document in this collection")

    judgment, created = Judgment.objects.update_or_create(
        collection=collection, query=query, document=document,
        defaults={"grade": grade, "source": Judgment.Source.SEARCH, "judged_by": request.user},
    )
    next_url = request.POST.get("next")
    if next_url and url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()},
                                                    require_https=request.is_secure()):
        messages.success(request, f"Judged {document.external_id} as grade {grade} for this query.")
        return HttpResponseRedirect(next_url)
    return JsonResponse(
        {"id": judgment.pk, "collection": collection.slug, "query": query, "document": document.external_id,
         "grade": grade, "created": created},
        status=201 if created else 200,
    )
