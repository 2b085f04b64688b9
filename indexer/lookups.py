"""Read-only questions about a collection's builds and documents, asked by the indexing stages,
the search side and the reranker alike (no state changes here, no engine, no queueing)."""
from __future__ import annotations

from .models import Collection, Document, IndexBuild


def current_build(collection_id: int) -> IndexBuild | None:
    """The build in progress (building or finalizing), if any."""
    return IndexBuild.objects.filter(collection_id=collection_id, status__in=IndexBuild.IN_PROGRESS).first()


def live_build(collection_id: int) -> IndexBuild | None:
    return IndexBuild.objects.filter(collection_id=collection_id, status=IndexBuild.Status.LIVE).first()


def serving_model(collection: Collection) -> str:
    """The model whose vectors the alias serves now: queries must be embedded with it."""
    live = live_build(collection.pk)
    return live.model_id if live else collection.embedding_model


def index_states(slugs) -> tuple[set[str], set[str]]:
    """(collections with a live index, collections without one but with a build in progress) of
    `slugs`. The alias of the first must exist in the engine; that of the second may (a rebuild
    retires the old build a moment before it marks the new one live, the alias already swapped;
    a first build creates it at its swap)."""
    rows = IndexBuild.objects.filter(collection__slug__in=slugs,
                                     status__in=[IndexBuild.Status.LIVE, *IndexBuild.IN_PROGRESS])
    live, building = set(), set()
    for slug, status in rows.values_list("collection__slug", "status"):
        (live if status == IndexBuild.Status.LIVE else building).add(slug)
    return live, building - live


def serving(collection: Collection) -> tuple[str, str]:
    """(model, keyword language) of the index the alias serves now: queries are embedded with
    that model and analyzed in that language, so a rebuild with another one changes nothing
    until the alias swaps."""
    live = live_build(collection.pk)
    return (live.model_id, live.language) if live else (collection.embedding_model, collection.language)


def indexable_documents(collection_id: int):
    """The documents an index of the collection must hold: all but those removed from it."""
    return Document.objects.filter(collection_id=collection_id).exclude(status=Document.Status.REMOVED)


def collection_indices(collection_id: int) -> list[str]:
    """Every index of a collection that still exists (live, building, kept old ones)."""
    return list(IndexBuild.objects.filter(collection_id=collection_id, index_deleted=False)
                .exclude(dims=None).values_list("index_name", flat=True))
