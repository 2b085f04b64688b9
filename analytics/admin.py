"""The search log in the admin, and its report page (admin/analytics/searchlog/report/)."""
from __future__ import annotations

from datetime import timedelta

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from indexer.models import Collection

from .models import SearchClick, SearchLog
from .report import build_report, plots

# The periods the report offers, in days.
PERIODS = (1, 7, 30, 90, 365)


class ClickInline(admin.TabularInline):
    model = SearchClick
    extra = 0
    can_delete = False
    readonly_fields = ("rank", "document", "channel", "created_at")
    fields = readonly_fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(SearchLog)
class SearchLogAdmin(admin.ModelAdmin):
    list_display = ("created_at", "query", "mode", "channel", "result_count", "reranked", "latency_ms", "session")
    list_filter = ("channel", "mode", "reranked", "collections")
    search_fields = ("query", "session")
    date_hierarchy = "created_at"
    inlines = [ClickInline]
    readonly_fields = [f.name for f in SearchLog._meta.fields] + ["collections"]
    change_list_template = "admin/analytics/searchlog/change_list.html"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_urls(self):
        return [path("report/", self.admin_site.admin_view(self.report_view), name="analytics_searchlog_report")] \
            + super().get_urls()

    def report_view(self, request):
        """GET ?collection=<slug>&days=N: the report; a bad value is a message, and the default used."""
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        errors = []
        collections = list(Collection.objects.order_by("name"))
        slug = request.GET.get("collection", "")
        collection = next((c for c in collections if c.slug == slug), None)
        if slug and collection is None:
            errors.append(f"No collection {slug!r}: all collections shown.")
        raw_days = request.GET.get("days", "30")
        days = int(raw_days) if raw_days.isdigit() and int(raw_days) in PERIODS else None
        if days is None:
            errors.append(f"days must be one of {', '.join(map(str, PERIODS))}, not {raw_days[:20]!r}: 30 shown.")
            days = 30
        until = timezone.now()
        report = build_report(collection, until - timedelta(days=days), until)
        context = dict(self.admin_site.each_context(request), title="Search analytics", opts=self.model._meta,
                       report=report, plots=plots(report), collections=collections, collection=collection,
                       days=days, periods=PERIODS, errors=errors)
        return TemplateResponse(request, "admin/analytics/searchlog/report.html", context)
