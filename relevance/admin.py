from django.contrib import admin, messages
from django.db.models import OuterRef, Subquery
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from .models import ImplicitJudgment, Judgment


def _same_pair(model):
    """The grade `model` gives the row's (collection, query, document), as a subquery."""
    return Subquery(model.objects.filter(collection=OuterRef("collection"), query=OuterRef("query"),
                                         document=OuterRef("document")).values("grade")[:1])


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = ("query", "document", "grade", "implied_grade", "collection", "source", "judged_by", "updated_at")
    list_filter = ("collection", "grade", "source")
    search_fields = ("query", "query_id", "document__external_id", "document__title")
    raw_id_fields = ("document",)
    readonly_fields = ("judged_by", "created_at", "updated_at")
    list_select_related = ("collection", "document", "judged_by")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(implied=_same_pair(ImplicitJudgment))

    @admin.display(description="implied by clicks", ordering="implied")
    def implied_grade(self, obj):
        return "–" if obj.implied is None else obj.implied

    def save_model(self, request, obj, form, change):
        if not change:
            obj.judged_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(ImplicitJudgment)
class ImplicitJudgmentAdmin(admin.ModelAdmin):
    """Grades implied by clicks (analytics/click_judgments.py): read-only, since each derivation
    replaces them; staff confirm one (a staff judgment with its grade) or override it (the staff
    judgment form, filled in). Where a staff judgment exists it wins; the list shows both."""

    list_display = ("query", "document", "grade", "staff_grade", "clicks", "examinations", "relevance_estimate",
                    "collection", "derived_at", "override")
    list_filter = ("collection", "grade")
    search_fields = ("query", "document__external_id", "document__title")
    list_select_related = ("collection", "document")
    actions = ["confirm"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(staff=_same_pair(Judgment))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="staff grade", ordering="staff")
    def staff_grade(self, obj):
        return "–" if obj.staff is None else obj.staff

    @admin.display(description="clicks / examinations")
    def relevance_estimate(self, obj):
        return f"{obj.relevance:.2f}"

    @admin.display(description="")
    def override(self, obj):
        url = reverse("admin:relevance_judgment_add") + "?" + urlencode({
            "collection": obj.collection_id, "query": obj.query, "document": obj.document_id, "grade": obj.grade,
            "source": Judgment.Source.ADMIN})
        return format_html('<a href="{}">judge</a>', url) if obj.staff is None else ""

    @admin.action(description="Confirm as staff judgments (their grade)", permissions=["confirm"])
    def confirm(self, request, queryset):
        existing = set(Judgment.objects.filter(collection__in={j.collection_id for j in queryset})
                       .values_list("collection_id", "query", "document_id"))
        new = [Judgment(collection_id=j.collection_id, query=j.query, document_id=j.document_id, grade=j.grade,
                        source=Judgment.Source.ADMIN, judged_by=request.user)
               for j in queryset if (j.collection_id, j.query, j.document_id) not in existing]
        Judgment.objects.bulk_create(new)
        skipped = queryset.count() - len(new)
        self.message_user(request, f"{len(new)} staff judgments created from clicks"
                          + (f"; {skipped} skipped: staff had judged them already (their grade stays)" if skipped
                             else ""), messages.SUCCESS)

    def has_confirm_permission(self, request):
        return request.user.has_perm("relevance.add_judgment")


# Evaluate and train runs, and a collection's trained rerankers (relevance/admin_runs.py).
from . import admin_runs  # noqa: E402,F401
