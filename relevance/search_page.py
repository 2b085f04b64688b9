"""The search page's judging form: staff see the grade each result already has for the query and
grade it in place (the form posts to relevance/views.py)."""
from __future__ import annotations

from .models import MAX_GRADE, Judgment
from search.query_text import normalize_query


def add_grades(request, context: dict) -> None:
    """A search_page hook (search/page_hooks.py): for staff, each result gains its grade (None: not
    judged) and the page the form under it."""
    if not request.user.is_staff or not context.get("results"):
        return
    results = context["results"]
    given = dict(Judgment.objects.filter(query=normalize_query(context["search"]["query"]),
                                         document_id__in=[r["document_id"] for r in results])
                 .values_list("document_id", "grade"))
    context["results"] = [dict(r, grade=given.get(r["document_id"])) for r in results]
    context["grades"] = range(MAX_GRADE + 1)
    context["result_extras_template"] = "relevance/judge_form.html"
