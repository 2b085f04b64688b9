"""Admin for collections and documents: per-status counts, the multi-file upload with its
per-file report, and bulk "reindex" / "remove from index" actions (queued by indexer/tasks.py)."""
from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from . import tasks
from .admin_builds import CollectionRebuildMixin
from .forms import UploadDocumentsForm
from .importing import ImportBusy, ImportOptions, Source, import_sources
from .lookups import serving_model
from .models import Collection, Document

STATUSES = Document.Status


def document_list_url(collection_id: int, status: str | None = None) -> str:
    url = reverse("admin:indexer_document_changelist") + f"?collection__id__exact={collection_id}"
    return url + (f"&status__exact={status}" if status else "")


def status_count_column(status: Document.Status):
    """A list column with the number of the collection's documents in `status`, linked to them."""

    @admin.display(description=status.label, ordering=f"count_{status.value}")
    def column(self, collection):
        count = getattr(collection, f"count_{status.value}")
        if not count:
            return "0"
        return format_html('<a href="{}">{}</a>', document_list_url(collection.pk, status.value), count)

    column.__name__ = f"count_{status.value}"
    return column


@admin.register(Collection)
class CollectionAdmin(CollectionRebuildMixin, admin.ModelAdmin):
    list_display = ("name", "slug", "visibility", "language", "vectors_model", "total_documents",
                    *(f"count_{s.value}" for s in STATUSES))
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    filter_horizontal = ("groups",)
    readonly_fields = ("document_counts", "created_at", "updated_at")
    change_form_template = "admin/indexer/collection/change_form.html"

    count_pending = status_count_column(STATUSES.PENDING)
    count_queued = status_count_column(STATUSES.QUEUED)
    count_indexing = status_count_column(STATUSES.INDEXING)
    count_indexed = status_count_column(STATUSES.INDEXED)
    count_failed = status_count_column(STATUSES.FAILED)
    count_removed = status_count_column(STATUSES.REMOVED)

    def get_queryset(self, request):
        counts = {f"count_{s.value}": Count("documents", filter=Q(documents__status=s.value)) for s in STATUSES}
        return super().get_queryset(request).annotate(count_total=Count("documents"), **counts)

    @admin.display(description="Vectors from")
    def vectors_model(self, collection):
        """The bi-encoder of the live index (what searches use), and the configured one when a
        rebuild to it is still to come."""
        serving = serving_model(collection)
        if serving != collection.embedding_model:
            return f"{serving} (rebuild to {collection.embedding_model})"
        return serving

    @admin.display(description="Documents", ordering="count_total")
    def total_documents(self, collection):
        return format_html('<a href="{}">{}</a>', document_list_url(collection.pk), collection.count_total)

    @admin.display(description="Documents by status")
    def document_counts(self, collection):
        if collection.pk is None:
            return "-"
        counts = dict(collection.documents.values_list("status").annotate(n=Count("pk")))
        links = [(document_list_url(collection.pk, s.value), s.label, counts[s.value])
                 for s in STATUSES if counts.get(s.value)]
        return format_html_join(", ", '<a href="{}">{}: {}</a>', links) if links else "no documents yet"

    def get_fields(self, request, obj=None):
        # The per-status counts first, under the name, rather than at the end of the form.
        fields = [f for f in super().get_fields(request, obj) if f != "document_counts"]
        return [*fields[:2], "document_counts", *fields[2:]]

    def get_urls(self):
        upload = path("<path:object_id>/upload/", self.admin_site.admin_view(self.upload_view),
                      name="indexer_collection_upload")
        return [upload, *super().get_urls()]

    def upload_view(self, request, object_id):
        """Upload several files; each is reported: created, updated, unchanged, rejected (why)."""
        collection = get_object_or_404(Collection, pk=object_id)
        document_admin = self.admin_site._registry[Document]
        if not (self.has_view_permission(request, collection)
                and document_admin.has_add_permission(request)
                and document_admin.has_change_permission(request)):
            raise PermissionDenied
        report = None
        if request.method == "POST":
            form = UploadDocumentsForm(request.POST, request.FILES)
            if form.is_valid():
                options = ImportOptions(form.cleaned_data["id_column"] or None, form.cleaned_data["title_column"] or None,
                                        form.cleaned_data["text_column"] or None)
                sources = [Source.from_upload(f) for f in form.cleaned_data["files"]]
                try:
                    report = import_sources(collection, sources, options, wait=False)
                except ImportBusy as exc:
                    messages.error(request, f"Nothing was uploaded: {exc} (upload the files again then).")
                    return HttpResponseRedirect(request.get_full_path())
                summary = (f"{report.created} created, {report.updated} updated, {report.unchanged} unchanged; "
                           f"{len(report.changed_ids)} queued for indexing.")
                if report.has_rejections:
                    messages.warning(request, f"{summary} {report.rejected_files} file(s) and "
                                              f"{report.rejected_records} record(s) were rejected (see below).")
                else:
                    messages.success(request, summary)
                form = UploadDocumentsForm()
        else:
            form = UploadDocumentsForm()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Upload documents to {collection}",
            "collection": collection,
            "form": form,
            "report": report,
            "documents_url": document_list_url(collection.pk),
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/indexer/collection/upload.html", context)


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ("external_id", "short_title", "collection", "status", "chunks", "short_error")
    list_filter = ("collection", "status")
    search_fields = ("title", "external_id")
    list_select_related = ("collection",)
    list_per_page = 50
    readonly_fields = ("content_hash", "status", "last_error", "indexed_model", "chunk_count", "indexed_hash",
                       "indexed_at", "created_at", "updated_at")
    actions = ("reindex", "remove_from_index")

    class Media:
        css = {"all": ["indexer/admin.css"]}

    @admin.display(description="Title", ordering="title")
    def short_title(self, document):
        return Truncator(document.title).chars(80)

    @admin.display(description="Chunks", ordering="chunk_count")
    def chunks(self, document):
        return document.chunk_count

    @admin.display(description="Error", ordering="last_error")
    def short_error(self, document):
        return Truncator(document.last_error).chars(120)

    def get_readonly_fields(self, request, obj=None):
        # The external id is the document's identity in the index: fixed once created.
        return ("collection", "external_id", *self.readonly_fields) if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        """An edit that changes what is indexed queues the document again."""
        old_hash = obj.content_hash
        obj.refresh_hash()
        super().save_model(request, obj, form, change)
        if not change or obj.content_hash != old_hash:
            tasks.queue_for_indexing([obj.pk])

    @admin.action(description="Reindex selected documents", permissions=["change"])
    def reindex(self, request, queryset):
        count = tasks.queue_for_indexing(queryset.values_list("pk", flat=True))
        self.message_user(request, f"{count} document(s) queued for indexing.", messages.SUCCESS)

    @admin.action(description="Remove selected documents from the index", permissions=["change"])
    def remove_from_index(self, request, queryset):
        count = tasks.queue_for_removal(queryset.values_list("pk", flat=True))
        self.message_user(request, f"{count} document(s) queued for removal from the index "
                                   "(they stay in the database; 'Reindex' brings them back).", messages.SUCCESS)
