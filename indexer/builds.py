"""Index builds: the first index of a collection, and zero-downtime rebuilds.

    start_build()      database record (one build per collection at a time, enforced by a
                       constraint), documents set `queued`, then the `prepare_build` task
    prepare_build()    (worker) loads the model, creates the index with its dimensions and
                       `_meta`, queues every document in batches for that build
    after_batch()      (worker, after each batch) refreshes the progress counters and, when no
                       document is left to do, moves the build to `finalizing` exactly once
    finalize_build()   (worker) refresh, check the counts against the database, swap the alias
                       atomically, record the model and language on the collection, delete old
                       indices beyond `keep_old_indices`

A build fixes the embedding model, the index options and the keyword language
(indexer/analysis.py) of its index; changing any of them on a collection takes a rebuild.

While a build runs the alias keeps serving the previous index; document statuses follow the
new index (so `indexed` counts the progress of the build), and edits made meanwhile are written
to both indices (indexer/pipeline.py write_targets).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone
from elasticsearch import ApiError, NotFoundError

from .analysis import check_language
from .es import get_client
from .index import INDEX_OPTION_TYPES, alias_name, create_index, indices_behind, new_index_name, point_alias
from .models import Collection, Document, IndexBuild

log = logging.getLogger(__name__)

# A build whose index still disagrees with the database after this many re-index rounds fails.
MAX_CHECK_ROUNDS = 3


class BuildInProgress(Exception):
    def __init__(self, build: IndexBuild | None):
        self.build = build
        super().__init__(f"collection already has a build in progress: {build}")


class BuildCheckFailed(Exception):
    """The new index does not hold exactly what the database says; the alias is not swapped."""


def _to_index(document_ids_qs) -> list[int]:
    return list(document_ids_qs.values_list("pk", flat=True).order_by("pk"))


def indexable_documents(collection_id: int):
    return Document.objects.filter(collection_id=collection_id).exclude(status=Document.Status.REMOVED)


# --------------------------------------------------------------------------- starting


def start_build(collection: Collection, model_id: str | None = None, index_options: str | None = None,
                requested_by: str = "", language: str | None = None) -> IndexBuild:
    """Record a build and hand it to the workers; raises BuildInProgress if one runs already
    (UnknownLanguage, a ValueError, for a bad language)."""
    model_id = (model_id or collection.embedding_model).strip()
    index_options = index_options or collection.index_options
    language = check_language(language or collection.language)
    if index_options not in INDEX_OPTION_TYPES:
        raise ValueError(f"index_options must be one of {INDEX_OPTION_TYPES}, not {index_options!r}")
    try:
        with transaction.atomic():
            build = IndexBuild.objects.create(
                collection=collection, index_name=new_index_name(collection.slug), model_id=model_id,
                language=language, index_options=index_options, status=IndexBuild.Status.BUILDING,
                requested_by=requested_by,
                total_documents=indexable_documents(collection.pk).count(), progress_at=timezone.now(),
            )
            indexable_documents(collection.pk).update(
                status=Document.Status.QUEUED, last_error="", updated_at=timezone.now()
            )

            def send():
                from .tasks import prepare_build

                prepare_build.delay(build.pk)

            transaction.on_commit(send)
    except IntegrityError:
        raise BuildInProgress(current_build(collection.pk)) from None
    return build


def current_build(collection_id: int) -> IndexBuild | None:
    return IndexBuild.objects.filter(collection_id=collection_id, status__in=IndexBuild.IN_PROGRESS).first()


def live_build(collection_id: int) -> IndexBuild | None:
    return IndexBuild.objects.filter(collection_id=collection_id, status=IndexBuild.Status.LIVE).first()


def serving_model(collection: Collection) -> str:
    """The model whose vectors the alias serves now: queries must be embedded with it."""
    live = live_build(collection.pk)
    return live.model_id if live else collection.embedding_model


def serving(collection: Collection) -> tuple[str, str]:
    """(model, keyword language) of the index the alias serves now: queries are embedded with
    that model and analyzed in that language, so a rebuild with another one changes nothing
    until the alias swaps."""
    live = live_build(collection.pk)
    return (live.model_id, live.language) if live else (collection.embedding_model, collection.language)


def prepare_build(build_id: int) -> dict:
    """(worker) Create the build's index and queue its documents."""
    from .dispatch import queue_for_indexing
    from .embedding import embedding_dimension, load_embedding_model

    build = IndexBuild.objects.select_related("collection").get(pk=build_id)
    if build.status != IndexBuild.Status.BUILDING:
        return {"skipped": build.status}
    model = load_embedding_model(build.model_id)
    dims = embedding_dimension(model)
    client = get_client()
    if not client.indices.exists(index=build.index_name):  # a redelivered message finds it there
        create_index(build.index_name, dims=dims, model_id=build.model_id, index_options=build.index_options,
                     language=build.language)
    # No periodic refresh while building: fewer, larger segments; finalize refreshes once.
    client.indices.put_settings(index=build.index_name, settings={"index": {"refresh_interval": "-1"}})
    IndexBuild.objects.filter(pk=build.pk).update(dims=dims)
    with transaction.atomic():
        ids = _to_index(indexable_documents(build.collection_id))
        queue_for_indexing(ids, build_id=build.pk)
    if not ids:
        after_batch(build.collection_id)
    return {"documents": len(ids), "dims": dims}


def ensure_live_build(collection: Collection) -> IndexBuild:
    """(worker) The live index of a collection, created on first use (or adopted when the alias
    exists but the database has no record of it, e.g. after restoring the database)."""
    from .embedding import embedding_dimension, load_embedding_model

    with transaction.atomic():
        # Serialise workers creating the first index of the same collection.
        Collection.objects.select_for_update().filter(pk=collection.pk).first()
        live = live_build(collection.pk)
        if live is not None:
            return live
        alias = alias_name(collection.slug)
        existing = indices_behind(alias)
        if existing:
            index = existing[-1]
            meta = get_client().indices.get_mapping(index=index)[index]["mappings"].get("_meta", {})
            return IndexBuild.objects.create(
                collection=collection, index_name=index, status=IndexBuild.Status.LIVE,
                model_id=meta.get("embedding_model", collection.embedding_model), dims=meta.get("dims"),
                # An index from before languages has no `language` in its _meta: standard analyzer only.
                language=meta.get("language", "none"),
                index_options=meta.get("index_options", collection.index_options),
                requested_by="adopted existing alias", finished_at=timezone.now(),
            )
        model = load_embedding_model(collection.embedding_model)
        dims = embedding_dimension(model)
        index = new_index_name(collection.slug)
        create_index(index, dims=dims, model_id=collection.embedding_model, index_options=collection.index_options,
                     language=collection.language)
        point_alias(alias, index)
        return IndexBuild.objects.create(
            collection=collection, index_name=index, status=IndexBuild.Status.LIVE,
            model_id=collection.embedding_model, dims=dims, index_options=collection.index_options,
            language=collection.language,
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


def after_batch(collection_id: int) -> None:
    """(worker) Progress of the collection's build; the last batch hands it to finalize."""
    build = current_build(collection_id)
    if build is None or build.status != IndexBuild.Status.BUILDING or build.dims is None:
        return
    build = refresh_progress(build)
    if build.done_documents + build.failed_documents < build.total_documents:
        return
    # Exactly one batch wins this transition, even with several workers.
    moved = IndexBuild.objects.filter(pk=build.pk, status=IndexBuild.Status.BUILDING).update(
        status=IndexBuild.Status.FINALIZING
    )
    if moved:
        from .tasks import finalize_build

        transaction.on_commit(lambda: finalize_build.delay(build.pk))


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


def index_inventory(index: str) -> dict[int, dict]:
    """Per document id in an index: chunk count, highest chunk number and content hashes."""
    client = get_client()
    inventory: dict[int, dict] = {}
    after = None
    while True:
        composite = {"size": 1000, "sources": [{"doc": {"terms": {"field": "document_id"}}},
                                               {"hash": {"terms": {"field": "content_hash"}}}]}
        if after:
            composite["after"] = after
        result = client.search(index=index, size=0, aggs={
            "docs": {"composite": composite, "aggs": {"max_chunk": {"max": {"field": "chunk"}}}}
        })["aggregations"]["docs"]
        for bucket in result["buckets"]:
            entry = inventory.setdefault(bucket["key"]["doc"], {"chunks": 0, "max_chunk": -1, "hashes": set()})
            entry["chunks"] += bucket["doc_count"]
            entry["max_chunk"] = max(entry["max_chunk"], int(bucket["max_chunk"]["value"]))
            entry["hashes"].add(bucket["key"]["hash"])
        after = result.get("after_key")
        if not after or not result["buckets"]:
            return inventory


def check_index(index: str, collection_id: int) -> IndexCheck:
    """Every indexable document is in the index with its current text, all its chunks, no more."""
    client = get_client()
    client.indices.refresh(index=index)
    inventory = index_inventory(index)
    check = IndexCheck(index_chunks=client.count(index=index)["count"])
    expected = indexable_documents(collection_id).values_list("pk", "content_hash", "chunk_count", "status")
    for pk, content_hash, chunk_count, status in expected:
        check.expected_documents += 1
        check.expected_chunks += chunk_count
        found = inventory.pop(pk, None)
        if (status != Document.Status.INDEXED or found is None or found["hashes"] != {content_hash}
                or found["chunks"] != chunk_count or found["max_chunk"] != chunk_count - 1):
            check.missing.append(pk)
    check.extra = sorted(inventory)
    return check


def finalize_build(build_id: int) -> dict:
    """(worker) Check the new index against the database, swap the alias, clean up."""
    from .dispatch import queue_for_indexing
    from .pipeline import remove_chunks

    build = IndexBuild.objects.select_related("collection").get(pk=build_id)
    if build.status != IndexBuild.Status.FINALIZING:
        return {"skipped": build.status}
    build = refresh_progress(build)
    if build.failed_documents:
        fail_build(build, f"{build.failed_documents} documents failed to index (see their errors); "
                          "the alias still serves the previous index")
        return {"failed": build.failed_documents}
    client = get_client()
    client.indices.put_settings(index=build.index_name, settings={"index": {"refresh_interval": None}})
    check = check_index(build.index_name, build.collection_id)
    if check.extra:  # chunks of documents deleted meanwhile
        remove_chunks(build.index_name, check.extra)
        check = check_index(build.index_name, build.collection_id)
    if check.missing and build.check_rounds < MAX_CHECK_ROUNDS:
        # Not what the database says (a crash between writing and recording, say): index those
        # documents again and finalize once they are done.
        log.warning("build %s: %d documents to redo before the swap", build, len(check.missing))
        with transaction.atomic():
            IndexBuild.objects.filter(pk=build.pk).update(
                status=IndexBuild.Status.BUILDING, check_rounds=build.check_rounds + 1
            )
            queue_for_indexing(check.missing, build_id=build.pk)
        return {"redo": len(check.missing)}
    if not check.ok:
        fail_build(build, f"count check failed: the database expects {check.expected_documents} documents "
                          f"and {check.expected_chunks} chunks, the index holds {check.index_chunks} chunks "
                          f"({len(check.missing)} documents missing or stale, e.g. {check.missing[:5]})")
        return {"failed": "count check"}
    alias = alias_name(build.collection.slug)
    point_alias(alias, build.index_name)
    with transaction.atomic():
        IndexBuild.objects.filter(collection_id=build.collection_id, status=IndexBuild.Status.LIVE).update(
            status=IndexBuild.Status.RETIRED, finished_at=timezone.now()
        )
        # The collection now serves this model and language (queryset update: no model signals,
        # no re-index).
        Collection.objects.filter(pk=build.collection_id).update(
            embedding_model=build.model_id, index_options=build.index_options, language=build.language
        )
    # Clean up before saying `live`, so that whoever waits for the build sees the final state.
    # Meanwhile writes go to this build only (it is still in progress, and no other is live).
    deleted = delete_old_indices(build.collection)
    IndexBuild.objects.filter(pk=build.pk).update(status=IndexBuild.Status.LIVE, finished_at=timezone.now())
    log.info("build %s is live: %d documents, %d chunks; deleted %s", build, check.expected_documents,
             check.index_chunks, deleted)
    return {"live": build.index_name, "documents": check.expected_documents, "chunks": check.index_chunks,
            "deleted_indices": deleted}


def fail_build(build: IndexBuild, error: str) -> None:
    """The alias stays where it is; statuses are set back to what the live index holds."""
    from .reconcile import reconcile_collection

    IndexBuild.objects.filter(pk=build.pk).update(
        status=IndexBuild.Status.FAILED, error=error[:5000], finished_at=timezone.now()
    )
    log.error("build %s failed: %s", build, error)
    reconcile_collection(build.collection_id, older_than=0, retry_failed=False)


def delete_old_indices(collection: Collection) -> list[str]:
    """Keep the newest `keep_old_indices` retired indices; failed builds' indices always go."""
    keep = Collection.objects.filter(pk=collection.pk).values_list("keep_old_indices", flat=True).first() or 0
    retired = IndexBuild.objects.filter(collection=collection, status=IndexBuild.Status.RETIRED,
                                        index_deleted=False).order_by("-created_at")
    doomed = list(retired[keep:]) + list(IndexBuild.objects.filter(
        collection=collection, status=IndexBuild.Status.FAILED, index_deleted=False))
    live_indices = set(indices_behind(alias_name(collection.slug)))
    deleted = []
    for build in doomed:
        if build.index_name in live_indices:
            continue
        try:
            get_client().indices.delete(index=build.index_name)
        except NotFoundError:
            pass
        except ApiError as exc:
            log.warning("could not delete index %s: %s", build.index_name, exc)
            continue
        IndexBuild.objects.filter(pk=build.pk).update(index_deleted=True)
        deleted.append(build.index_name)
    return deleted


def drop_indices(index_names: list[str]) -> list[str]:
    """Delete indices (of a deleted collection); missing ones are fine."""
    client = get_client()
    if index_names:
        client.options(ignore_status=404).indices.delete(index=",".join(index_names))
    return index_names
