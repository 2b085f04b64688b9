"""Admin of index builds (indexer/builds.py): progress that updates in place
(indexer/admin_build_progress.py), the rebuild page, and, through `CollectionRebuildMixin`
(used by the collection admin in indexer/admin.py), a "Rebuild index" action on collections
and the rebuild offer when a collection's model, keyword language or index layout (shards,
replicas) changes.
"""
from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from . import admin_build_progress
from .analysis import LANGUAGES
from .builds import BuildInProgress
from .embedding import UnloadableModel, check_model_id
from .lookups import live_build
from .models import MAX_REPLICAS, MAX_SHARDS, Collection, IndexBuild
from .store import get_store
from .tasks import start_build


def rebuild_url(collection_id: int, model_id: str | None = None, language: str | None = None,
                shards: int | None = None, replicas: int | None = None) -> str:
    url = reverse("admin:indexer_indexbuild_rebuild", args=[collection_id])
    query = {key: value for key, value in (("model", model_id), ("language", language), ("shards", shards),
                                           ("replicas", replicas)) if value is not None and value != ""}
    return url + (f"?{urlencode(query)}" if query else "")


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class RebuildForm(forms.Form):
    model_id = forms.CharField(label="Embedding model", max_length=300,
                               help_text="A sentence-transformers id or a local directory.")
    # The layouts the engine in use offers (OpenSearch has no bbq_hnsw).
    index_options = forms.ChoiceField(label="Index options",
                                      choices=lambda: [(t, t) for t in get_store().index_option_types])
    # Not required: a form posted without it (a script, an older page) builds in the collection's
    # language; a value outside the list is still an error.
    language = forms.ChoiceField(label="Keyword language", choices=list(LANGUAGES.items()), required=False,
                                 help_text="Analysis of the keyword (BM25) stage in the new index.")
    # Not required either: without them the build takes the collection's layout.
    shards = forms.IntegerField(label="Shards", min_value=1, max_value=MAX_SHARDS, required=False,
                                help_text="Primary shards of the new index.")
    replicas = forms.IntegerField(label="Replicas", min_value=0, max_value=MAX_REPLICAS, required=False,
                                  help_text="Copies of each shard on other nodes of the cluster.")

    def clean_model_id(self):
        model_id = self.cleaned_data["model_id"].strip()
        try:
            check_model_id(model_id)
        except UnloadableModel as exc:
            raise forms.ValidationError(str(exc)) from None
        return model_id


@admin.register(IndexBuild)
class IndexBuildAdmin(admin.ModelAdmin):
    list_display = ("index_name", "collection", "status", "model_id", "language", "index_options", "layout", "progress",
                    "failed_documents", "done_chunks", "rate", "eta", "created_at")
    list_filter = ("status", "collection")
    list_select_related = ("collection",)
    readonly_fields = ("collection", "index_name", "status", "error", "model_id", "language", "dims", "index_options",
                       "shards", "replicas", "progress", "failed_documents", "done_chunks", "rate", "eta", "elapsed", "check_rounds",
                       "requested_by", "index_deleted", "created_at", "progress_at", "finished_at")
    fields = readonly_fields
    actions = ("rebuild_collections",)
    change_list_template = "admin/indexer/indexbuild/change_list.html"
    change_form_template = "admin/indexer/indexbuild/change_form.html"

    def has_add_permission(self, request):
        return False  # builds are started with the rebuild page or `rebuild_index`

    def has_delete_permission(self, request, obj=None):
        return False  # the record is the history of the collection's indices

    @admin.display(description="Shards/replicas")
    def layout(self, build):
        return f"{build.shards}/{build.replicas}"

    @admin.display(description="Progress")
    def progress(self, build):
        done = build.done_documents + build.failed_documents
        percent = 100 * done / build.total_documents if build.total_documents else 100
        return f"{build.done_documents}/{build.total_documents} documents ({percent:.0f}%)"

    @admin.display(description="Rate")
    def rate(self, build):
        docs, chunks = build.documents_per_second, build.chunks_per_second
        return f"{docs:.1f} docs/s, {chunks:.1f} chunks/s" if docs and chunks else "-"

    @admin.display(description="ETA")
    def eta(self, build):
        return format_seconds(build.eta_seconds)

    @admin.display(description="Elapsed")
    def elapsed(self, build):
        return format_seconds(build.elapsed_seconds)

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            **self.progress_poll(IndexBuild.objects.filter(status__in=IndexBuild.IN_PROGRESS).exists()),
            "model_changes": collections_with_changed_model(),
        }
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        build = IndexBuild.objects.filter(pk=object_id).first()
        extra_context = {**(extra_context or {}), **self.progress_poll(bool(build and build.in_progress))}
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(description="Rebuild the selected builds' collections (their current model)")
    def rebuild_collections(self, request, queryset):
        start_rebuilds(self, request, Collection.objects.filter(pk__in=queryset.values("collection_id")))

    def progress_poll(self, running: bool) -> dict:
        """What a page needs to update its builds in place while one runs (nothing otherwise)."""
        if not running:
            return {"poll_seconds": None}
        return {"poll_seconds": admin_build_progress.POLL_SECONDS,
                "progress_url": reverse("admin:indexer_indexbuild_progress"),
                "live_fields": json.dumps(admin_build_progress.LIVE_FIELDS)}

    def get_urls(self):
        progress = path("progress/", self.admin_site.admin_view(
            lambda request: admin_build_progress.progress_view(self, request)), name="indexer_indexbuild_progress")
        return [path("rebuild/<int:collection_id>/", self.admin_site.admin_view(self.rebuild_view),
                     name="indexer_indexbuild_rebuild"), progress, *super().get_urls()]

    def rebuild_view(self, request, collection_id):
        """Confirm page: rebuild a collection, optionally with another model or index options."""
        collection = get_object_or_404(Collection, pk=collection_id)
        if not self.admin_site._registry[Collection].has_change_permission(request, collection):
            raise PermissionDenied
        live = live_build(collection.pk)
        initial = {"model_id": request.GET.get("model") or collection.embedding_model,
                   "index_options": collection.index_options,
                   "language": request.GET.get("language") or collection.language,
                   "shards": request.GET.get("shards") or collection.shards,
                   "replicas": request.GET.get("replicas") or collection.replicas}
        form = RebuildForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            try:
                build = start_build(collection, model_id=form.cleaned_data["model_id"],
                                    index_options=form.cleaned_data["index_options"],
                                    language=form.cleaned_data["language"] or None,
                                    shards=form.cleaned_data["shards"], replicas=form.cleaned_data["replicas"],
                                    requested_by=request.user.get_username())
            except BuildInProgress as exc:
                self.message_user(request, f"{collection} already has a build in progress.", messages.ERROR)
                return redirect(reverse("admin:indexer_indexbuild_change", args=[exc.build.pk]))
            self.message_user(request, f"Rebuilding {collection} into {build.index_name}; the alias keeps "
                                       "serving the current index until the new one is complete.", messages.SUCCESS)
            return redirect(reverse("admin:indexer_indexbuild_change", args=[build.pk]))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta,
                   "title": f"Rebuild the index of {collection}", "collection": collection, "live": live,
                   "form": form, "has_view_permission": True}
        return TemplateResponse(request, "admin/indexer/indexbuild/rebuild.html", context)


def start_rebuilds(model_admin, request, collections) -> None:
    for collection in collections:
        try:
            build = start_build(collection, requested_by=request.user.get_username())
        except BuildInProgress:
            model_admin.message_user(request, f"{collection}: a build is already in progress.", messages.WARNING)
            continue
        except ValueError as exc:  # index options or language the engine cannot build
            model_admin.message_user(request, f"{collection}: {exc}", messages.ERROR)
            continue
        model_admin.message_user(request, format_html(
            '{}: rebuilding into <a href="{}">{}</a> with {}, language {}.', collection,
            reverse("admin:indexer_indexbuild_change", args=[build.pk]), build.index_name, build.model_id,
            build.language,
        ), messages.SUCCESS)


def build_differences(build: IndexBuild, collection: Collection) -> tuple[str, str]:
    """("model X, language none", "model Y, language en"): what the live index serves and what
    the collection is set to, naming only what differs; ("", "") when nothing does."""
    serving, configured = [], []
    if build.model_id != collection.embedding_model:
        serving.append(build.model_id)
        configured.append(collection.embedding_model)
    if build.language != collection.language:
        serving.append(f"language {build.language}")
        configured.append(f"language {collection.language}")
    if (build.shards, build.replicas) != (collection.shards, collection.replicas):
        serving.append(f"{build.shards} shards, {build.replicas} replicas")
        configured.append(f"{collection.shards} shards, {collection.replicas} replicas")
    return ", ".join(serving), ", ".join(configured)


def collections_with_changed_model() -> list[dict]:
    """Collections whose configured model or language is not what their live index was built with."""
    changed = []
    for build in IndexBuild.objects.filter(status=IndexBuild.Status.LIVE).select_related("collection"):
        serving, configured = build_differences(build, build.collection)
        if serving:
            changed.append({"collection": build.collection, "serving": serving, "configured": configured,
                            "url": rebuild_url(build.collection.pk, build.collection.embedding_model,
                                               build.collection.language, build.collection.shards,
                                               build.collection.replicas)})
    return changed


class CollectionRebuildMixin:
    """For the collection admin: a "Rebuild index" action and, when a save changed the embedding
    model, the keyword language or the shards/replicas, a message offering the rebuild (the live
    index keeps serving the old ones until then: vectors of two models, or terms of two analyses,
    cannot be mixed in one index, and an index's number of shards is fixed when it is created)."""

    actions = ("rebuild_index_action",)

    @admin.action(description="Rebuild the index of the selected collections", permissions=["change"])
    def rebuild_index_action(self, request, queryset):
        start_rebuilds(self, request, queryset)

    def response_change(self, request, obj):
        live = live_build(obj.pk)
        serving, configured = build_differences(live, obj) if live is not None else ("", "")
        if serving:
            self.message_user(request, format_html(
                'The index of {} still serves {}. <a href="{}">Rebuild it with {}</a> (no downtime: '
                "the current index answers searches until the new one is ready).",
                obj, serving, rebuild_url(obj.pk, obj.embedding_model, obj.language, obj.shards, obj.replicas),
                configured,
            ), messages.WARNING)
        return super().response_change(request, obj)
