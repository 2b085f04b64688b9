"""Index builds: the first index of a collection, and zero-downtime rebuilds. State transitions
only: each step changes the build's record and its index, and returns what should happen next;
indexer/tasks.py queues that (the lifecycle reads top to bottom there).

    start_build()      database record (one build per collection at a time, enforced by a
                       constraint), documents set `queued`
    prepare_build()    loads the model, creates the index with its dimensions and `_meta`,
                       answers the documents to index into it
    after_batch()      refreshes the progress counters and, when no document is left to do,
                       moves the build to `finalizing` exactly once
    finalize_build()   refresh, check the counts against the database, swap the alias
                       atomically, record the model and language on the collection, delete old
                       indices beyond `keep_old_indices`

A build fixes the embedding model, the index options and the keyword language
(indexer/analysis.py) of its index; changing any of them on a collection takes a rebuild.

While a build runs the alias keeps serving the previous index; document statuses follow the
new index (so `indexed` counts the progress of the build), and edits made meanwhile are written
to both indices (indexer/pipeline.py write_targets).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from enum import StrEnum

from django.db import IntegrityError, transaction
from django.dispatch import Signal
from django.db.models import Count, Q, Sum
from django.utils import timezone

from .analysis import check_language
from .embedding import embedding_dimension, load_embedding_model
from .lookups import current_build, indexable_documents, live_build
from .models import Collection, Document, IndexBuild, check_layout
from .statuses import mark_queued
from .store import StoreError, alias_name, check_index_options, get_store, new_index_name

log = logging.getLogger(__name__)

# A build whose index still disagrees with the database after this many re-index rounds fails.
MAX_CHECK_ROUNDS = 3


class BuildInProgress(Exception):
    def __init__(self, build: IndexBuild | None):
        self.build = build
        super().__init__(f"collection already has a build in progress: {build}")


# Fields left out of a task's return value (indexer/tasks.py task_report): lists of ids as
# long as a corpus do not belong in the result backend.
NOT_REPORTED = {"report": False}


# --------------------------------------------------------------------------- starting


def start_build(collection: Collection, model_id: str | None = None, index_options: str | None = None,
                requested_by: str = "", language: str | None = None, shards: int | None = None,
                replicas: int | None = None) -> IndexBuild:
    """Record a build, its documents `queued`; raises BuildInProgress if one runs already
    (UnknownLanguage, a ValueError, for a bad language; ValueError for shards or replicas out of
    range). The build keeps the layout it started with. Preparing it is the next step."""
    model_id = (model_id or collection.embedding_model).strip()
    index_options = index_options or collection.index_options
    language = check_language(language or collection.language)
    check_index_options(index_options)
    shards, replicas = check_layout(collection.shards if shards is None else shards,
                                    collection.replicas if replicas is None else replicas)
    try:
        with transaction.atomic():
            build = IndexBuild.objects.create(
                collection=collection, index_name=new_index_name(collection.slug), model_id=model_id,
                language=language, index_options=index_options, shards=shards, replicas=replicas,
                status=IndexBuild.Status.BUILDING, requested_by=requested_by,
                total_documents=indexable_documents(collection.pk).count(), progress_at=timezone.now(),
            )
            indexable_documents(collection.pk).update(
                status=Document.Status.QUEUED, last_error="", updated_at=timezone.now()
            )
    except IntegrityError:
        raise BuildInProgress(current_build(collection.pk)) from None
    return build


@dataclass(frozen=True)
class PreparedBuild:
    """The build's index exists (`prepared`) and these documents are `queued` for it; any other
    status means the build was not `building` any more and nothing was done."""

    build_id: int
    collection_id: int
    status: str
    dims: int | None = None
    documents: int = 0
    document_ids: list[int] = field(default_factory=list, metadata=NOT_REPORTED)

    @property
    def prepared(self) -> bool:
        return self.status == IndexBuild.Status.BUILDING


def prepare_build(build_id: int) -> PreparedBuild:
    """Create the build's index and mark its documents queued (a redelivered message finds the
    index there and marks them again: harmless)."""
    build = IndexBuild.objects.select_related("collection").get(pk=build_id)
    if build.status != IndexBuild.Status.BUILDING:
        return PreparedBuild(build.pk, build.collection_id, build.status, build.dims)
    dims = embedding_dimension(load_embedding_model(build.model_id))
    store = get_store()
    if not store.index_exists(build.index_name):
        store.create_index(build.index_name, dims=dims, model_id=build.model_id,
                           index_options=build.index_options, language=build.language,
                           shards=build.shards, replicas=build.replicas)
    # Fewer, larger segments while building; finalize refreshes once.
    store.pause_refresh(build.index_name)
    IndexBuild.objects.filter(pk=build.pk).update(dims=dims)
    with transaction.atomic():
        ids = mark_queued(indexable_documents(build.collection_id).values_list("pk", flat=True))
    return PreparedBuild(build.pk, build.collection_id, build.status, dims, len(ids), ids)


def ensure_live_build(collection: Collection) -> IndexBuild:
    """The live index of a collection, created on first use (or adopted when the alias exists but
    the database has no record of it, e.g. after restoring the database)."""
    store = get_store()
    with transaction.atomic():
        # Serialise workers creating the first index of the same collection.
        Collection.objects.select_for_update().filter(pk=collection.pk).first()
        live = live_build(collection.pk)
        if live is not None:
            return live
        alias = alias_name(collection.slug)
        existing = store.indices_behind(alias)
        if existing:
            index = existing[-1]
            meta = store.index_meta(index)
            return IndexBuild.objects.create(
                collection=collection, index_name=index, status=IndexBuild.Status.LIVE,
                model_id=meta.get("embedding_model", collection.embedding_model), dims=meta.get("dims"),
                # An index from before languages has no `language` in its _meta: standard analyzer only.
                language=meta.get("language", "none"),
                index_options=meta.get("index_options", collection.index_options),
                # Indices from before configurable layouts had 1 shard and no replica.
                shards=meta.get("shards", 1), replicas=meta.get("replicas", 0),
                requested_by="adopted existing alias", finished_at=timezone.now(),
            )
        dims = embedding_dimension(load_embedding_model(collection.embedding_model))
        index = new_index_name(collection.slug)
        shards, replicas = check_layout(collection.shards, collection.replicas)
        store.create_index(index, dims=dims, model_id=collection.embedding_model,
                           index_options=collection.index_options, language=collection.language,
                           shards=shards, replicas=replicas)
        store.point_alias(alias, index)
        return IndexBuild.objects.create(
            collection=collection, index_name=index, status=IndexBuild.Status.LIVE,
            model_id=collection.embedding_model, dims=dims, index_options=collection.index_options,
            language=collection.language, shards=shards, replicas=replicas,
            requested_by="first document", finished_at=timezone.now(),
        )


# --------------------------------------------------------------------------- progress


def refresh_progress(build: IndexBuild) -> IndexBuild:
    counts = indexable_documents(build.collection_id).aggregate(
        total=Count("pk"),
        done=Count("pk", filter=Q(status=Document.Status.INDEXED)),
        failed=Count("pk", filter=Q(status=Document.Status.FAILED)),
        chunks=Sum("chunk_count", filter=Q(status=Document.Status.INDEXED)),
    )
    build.total_documents = counts["total"]
    build.done_documents = counts["done"]
    build.failed_documents = counts["failed"]
    build.done_chunks = counts["chunks"] or 0
    build.progress_at = timezone.now()
    IndexBuild.objects.filter(pk=build.pk).update(
        total_documents=build.total_documents, done_documents=build.done_documents,
        failed_documents=build.failed_documents, done_chunks=build.done_chunks, progress_at=build.progress_at,
    )
    return build


def after_batch(collection_id: int) -> int | None:
    """Progress of the collection's build; the id of the build to finalize when this batch was
    its last (exactly one batch gets it, even with several workers), else None."""
    build = current_build(collection_id)
    if build is None or build.status != IndexBuild.Status.BUILDING or build.dims is None:
        return None
    build = refresh_progress(build)
    if build.done_documents + build.failed_documents < build.total_documents:
        return None
    moved = IndexBuild.objects.filter(pk=build.pk, status=IndexBuild.Status.BUILDING).update(
        status=IndexBuild.Status.FINALIZING
    )
    return build.pk if moved else None


# --------------------------------------------------------------------------- finishing


@dataclass
class IndexCheck:
    """What an index holds for each document, compared with the database."""

    expected_documents: int = 0
    expected_chunks: int = 0
    index_chunks: int = 0
    missing: list[int] = field(default_factory=list)  # in the database, not (or stale) in the index
    extra: list[int] = field(default_factory=list)  # in the index, not (or removed) in the database

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra and self.expected_chunks == self.index_chunks


def check_index(index: str, collection_id: int) -> IndexCheck:
    """Every indexable document is in the index with its current text, all its chunks, no more."""
    store = get_store()
    store.refresh(index)
    inventory = store.inventory(index)
    check = IndexCheck(index_chunks=store.count(index))
    expected = indexable_documents(collection_id).values_list("pk", "content_hash", "chunk_count", "status")
    for pk, content_hash, chunk_count, status in expected:
        check.expected_documents += 1
        check.expected_chunks += chunk_count
        found = inventory.pop(pk, None)
        if (status != Document.Status.INDEXED or found is None or not found.holds(content_hash)
                or found.chunks != chunk_count):
            check.missing.append(pk)
    check.extra = sorted(inventory)
    return check


class Finalized(StrEnum):
    SKIPPED = "skipped"  # not `finalizing` (a redelivered message): nothing done
    REDO = "redo"  # documents sent back to be indexed again; the build is `building` again
    FAILED = "failed"  # the alias still serves the previous index
    LIVE = "live"  # the alias serves the build's index


@dataclass(frozen=True)
class FinalizedBuild:
    build_id: int
    collection_id: int
    outcome: Finalized
    error: str = ""
    documents: int = 0
    chunks: int = 0
    deleted_indices: list[str] = field(default_factory=list)
    redo: int = 0
    redo_ids: list[int] = field(default_factory=list, metadata=NOT_REPORTED)


# Sent once a build is live: collection_id, documents, and first (the collection had no live
# build before). Apps above the indexer act on it (relevance: the automatic reranker training);
# a receiver that fails is logged, never fails the build.
build_live = Signal()


def finalize_build(build_id: int) -> FinalizedBuild:
    """Check the new index against the database, swap the alias, clean up. A failed build is
    marked failed here; setting document statuses back to the live index is the next step."""
    build = IndexBuild.objects.select_related("collection").get(pk=build_id)
    result = functools.partial(FinalizedBuild, build.pk, build.collection_id)
    if build.status != IndexBuild.Status.FINALIZING:
        return result(Finalized.SKIPPED)
    build = refresh_progress(build)
    if build.failed_documents:
        error = (f"{build.failed_documents} documents failed to index (see their errors); "
                 "the alias still serves the previous index")
        fail_build(build, error)
        return result(Finalized.FAILED, error=error)
    store = get_store()
    store.resume_refresh(build.index_name)
    check = check_index(build.index_name, build.collection_id)
    if check.extra:  # chunks of documents deleted meanwhile
        store.remove_chunks(build.index_name, check.extra)
        check = check_index(build.index_name, build.collection_id)
    if check.missing and build.check_rounds < MAX_CHECK_ROUNDS:
        # Not what the database says (a crash between writing and recording, say): index those
        # documents again and finalize once they are done.
        log.warning("build %s: %d documents to redo before the swap", build, len(check.missing))
        with transaction.atomic():
            IndexBuild.objects.filter(pk=build.pk).update(
                status=IndexBuild.Status.BUILDING, check_rounds=build.check_rounds + 1
            )
            ids = mark_queued(check.missing)
        return result(Finalized.REDO, redo=len(ids), redo_ids=ids)
    if not check.ok:
        error = (f"count check failed: the database expects {check.expected_documents} documents "
                 f"and {check.expected_chunks} chunks, the index holds {check.index_chunks} chunks "
                 f"({len(check.missing)} documents missing or stale, e.g. {check.missing[:5]})")
        fail_build(build, error)
        return result(Finalized.FAILED, error=error)
    first = not IndexBuild.objects.filter(collection_id=build.collection_id).exclude(pk=build.pk).filter(
        status__in=(IndexBuild.Status.LIVE, IndexBuild.Status.RETIRED)).exists()
    store.point_alias(alias_name(build.collection.slug), build.index_name)
    with transaction.atomic():
        IndexBuild.objects.filter(collection_id=build.collection_id, status=IndexBuild.Status.LIVE).update(
            status=IndexBuild.Status.RETIRED, finished_at=timezone.now()
        )
        # The collection now serves this model, language and layout (queryset update: no model
        # signals, no re-index).
        Collection.objects.filter(pk=build.collection_id).update(
            embedding_model=build.model_id, index_options=build.index_options, language=build.language,
            shards=build.shards, replicas=build.replicas,
        )
    # Clean up before saying `live`, so that whoever waits for the build sees the final state.
    # Meanwhile writes go to this build only (it is still in progress, and no other is live).
    deleted = delete_old_indices(build.collection)
    IndexBuild.objects.filter(pk=build.pk).update(status=IndexBuild.Status.LIVE, finished_at=timezone.now())
    log.info("build %s is live: %d documents, %d chunks; deleted %s", build, check.expected_documents,
             check.index_chunks, deleted)
    for receiver, outcome in build_live.send_robust(IndexBuild, collection_id=build.collection_id,
                                                     documents=check.expected_documents, first=first):
        if isinstance(outcome, Exception):
            log.error("build %s: %s failed after the build went live: %r", build, receiver, outcome)
    return result(Finalized.LIVE, documents=check.expected_documents, chunks=check.index_chunks,
                  deleted_indices=deleted)


def fail_build(build: IndexBuild, error: str) -> None:
    """The alias stays where it is. Document statuses still follow the failed index: reconcile
    them against the live one next (indexer/tasks.py)."""
    IndexBuild.objects.filter(pk=build.pk).update(
        status=IndexBuild.Status.FAILED, error=error[:5000], finished_at=timezone.now()
    )
    log.error("build %s failed: %s", build, error)


def delete_old_indices(collection: Collection) -> list[str]:
    """Keep the newest `keep_old_indices` retired indices; failed builds' indices always go."""
    keep = Collection.objects.filter(pk=collection.pk).values_list("keep_old_indices", flat=True).first() or 0
    retired = IndexBuild.objects.filter(collection=collection, status=IndexBuild.Status.RETIRED,
                                        index_deleted=False).order_by("-created_at")
    doomed = list(retired[keep:]) + list(IndexBuild.objects.filter(
        collection=collection, status=IndexBuild.Status.FAILED, index_deleted=False))
    store = get_store()
    live_indices = set(store.indices_behind(alias_name(collection.slug)))
    deleted = []
    for build in doomed:
        if build.index_name in live_indices:
            continue
        try:
            store.delete_index(build.index_name)
        except StoreError as exc:  # kept on record (index_deleted stays false): the next swap tries again
            log.warning("could not delete index %s: %s", build.index_name, exc)
            continue
        IndexBuild.objects.filter(pk=build.pk).update(index_deleted=True)
        deleted.append(build.index_name)
    return deleted
