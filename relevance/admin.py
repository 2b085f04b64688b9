from django.contrib import admin

from .models import Judgment


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = ("query", "document", "grade", "collection", "source", "judged_by", "updated_at")
    list_filter = ("collection", "grade", "source")
    search_fields = ("query", "query_id", "document__external_id", "document__title")
    raw_id_fields = ("document",)
    readonly_fields = ("judged_by", "created_at", "updated_at")
    list_select_related = ("collection", "document", "judged_by")

    def save_model(self, request, obj, form, change):
        if not change:
            obj.judged_by = request.user
        super().save_model(request, obj, form, change)


# Evaluate and train runs, and a collection's trained rerankers (relevance/admin_runs.py).
from . import admin_runs  # noqa: E402,F401
