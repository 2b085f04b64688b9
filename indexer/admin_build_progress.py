"""The index builds' progress as JSON, for the build list and page to update in place
(indexer/templates/admin/indexer/indexbuild/progress_poll.html) instead of reloading.

GET <admin>/indexer/indexbuild/progress/?id=1&id=2   {"builds": [{"id", "status", "in_progress", "done", "total",
                                                      and each shown column as text}], "in_progress": bool}
Staff with the right to view builds; the columns are the admin's own (IndexBuildAdmin).
"""
from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import JsonResponse

from .models import IndexBuild

# Seconds between two polls of a page while a build runs.
POLL_SECONDS = 3
# Columns (IndexBuildAdmin fields) a poll refreshes: they change while a build runs.
LIVE_FIELDS = ("status", "progress", "failed_documents", "done_chunks", "rate", "eta", "elapsed")
MAX_IDS = 200  # a change list page shows at most 100 rows


def build_payload(model_admin, build: IndexBuild) -> dict:
    columns = {"status": build.get_status_display(), "failed_documents": str(build.failed_documents),
               "done_chunks": str(build.done_chunks)}
    for name in ("progress", "rate", "eta", "elapsed"):
        columns[name] = str(getattr(model_admin, name)(build))
    return {"id": build.pk, "status": build.status, "in_progress": build.in_progress,
            "done": build.done_documents + build.failed_documents, "total": build.total_documents,
            "columns": columns}


def progress_view(model_admin, request):
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    try:
        ids = [int(value) for value in request.GET.getlist("id")][:MAX_IDS]
    except ValueError:
        return JsonResponse({"error": "id must be a build's number"}, status=400)
    builds = [build_payload(model_admin, build) for build in IndexBuild.objects.filter(pk__in=ids)
              .select_related("collection").order_by("pk")]
    return JsonResponse({"builds": builds, "in_progress": any(build["in_progress"] for build in builds)})
