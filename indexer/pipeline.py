"""The indexing stage: database rows -> chunks -> vectors -> Elasticsearch, and the statuses back.

`index_documents(ids)` is what an `embed` worker runs for one batch of primary keys:

1. read the rows (the current text: a late message never writes stale content);
2. for every *target* index of the collection (the live index behind the alias and, during a
   rebuild, the index being built; each with its own model) chunk the documents with that
   model's tokenizer, sort the chunks by length (less padding), encode them in batches with
   normalised output, analyze title and text for the keyword stage in that index's language
   (indexer/analysis.py), and bulk-write them with deterministic `_id`s (re-indexing overwrites,
   never duplicates), deleting the chunks a shrunken document no longer has;
3. update the statuses of the whole batch in one transaction.

Errors worth retrying (the engine unreachable, timeouts, busy; a locked database) are raised as
they are so the Celery task retries with backoff (indexer/tasks.py); anything else is raised too
and ends, after the last retry, with the documents `failed` and the error text. Moving a build on
after the batch is the task's next step, not this module's.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .analysis import ANALYZED, index_terms
from .builds import ensure_live_build
from .chunking import Chunk, chunk_id, chunk_text, load_tokenizer, model_max_tokens
from .embedding import load_embedding_model
from .lookups import collection_indices, current_build, live_build
from .models import Collection, Document
from .store import ChunkWrite, IndexMissing, get_store

log = logging.getLogger(__name__)

# Tokens kept free in every chunk for the document title, which is embedded in front of each
# chunk: the title carries the topic of a passage (it helps retrieval on SciFact-like corpora),
# and a fixed reserve keeps chunk boundaries independent of the title's length.
TITLE_RESERVE_TOKENS = 32


@dataclass(frozen=True)
class Target:
    """An index the collection's documents are written to, with the model of its vectors and
    the language of its keyword terms."""

    index: str
    model_id: str
    build_id: int
    language: str


@dataclass
class PlannedChunk:
    document: Document
    chunk: Chunk
    embed_text: str  # what the model reads: title + chunk text, within the model's limit


# --------------------------------------------------------------------------- chunk planning


def chunk_limits(collection: Collection, tokenizer, model_max_seq_length: int | None) -> tuple[int, int]:
    """(tokens per chunk, overlap) for a collection under a model, leaving room for the title."""
    model_limit = model_max_tokens(tokenizer, model_max_seq_length)
    size = max(min(collection.chunk_size, model_limit - TITLE_RESERVE_TOKENS), 8)
    overlap = min(collection.chunk_overlap, size // 2)
    return size, overlap


def title_prefix(title: str, tokenizer) -> str:
    """The title cut to fit its reserve (one token stays free for the separator)."""
    title = " ".join(title.split())
    if not title:
        return ""
    enc = tokenizer(title, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if len(offsets) > TITLE_RESERVE_TOKENS - 1:
        title = title[: offsets[TITLE_RESERVE_TOKENS - 2][1]]
    return title + "\n"


def plan_chunks(documents: list[Document], collection: Collection, model_id: str) -> list[PlannedChunk]:
    """Every chunk of `documents` as the pipeline embeds it (also used by bench/indexing.py)."""
    model = load_embedding_model(model_id)
    tokenizer = load_tokenizer(model_id)
    size, overlap = chunk_limits(collection, tokenizer, model.max_seq_length)
    planned = []
    for document in documents:
        prefix = title_prefix(document.title, tokenizer)
        for chunk in chunk_text(document.text, tokenizer, size, overlap):
            planned.append(PlannedChunk(document, chunk, prefix + chunk.text))
    return planned


def encode_chunks(model_id: str, planned: list[PlannedChunk], batch_size: int | None = None) -> np.ndarray:
    """Unit-length float32 vectors in the order of `planned`; encoded longest first, so each
    batch holds chunks of similar length and little padding."""
    if not planned:
        return np.zeros((0, 0), dtype=np.float32)
    model = load_embedding_model(model_id)
    order = sorted(range(len(planned)), key=lambda i: -planned[i].chunk.tokens)
    # With the model's document prompt, as unit float32 rows (Elasticsearch's `dot_product`
    # rejects vectors whose norm fp16 rounding left just outside its tolerance).
    vectors = model.encode_documents([planned[i].embed_text for i in order],
                                     batch_size=batch_size or settings.EMBEDDING_BATCH_SIZE)
    result = np.empty_like(vectors)
    result[order] = vectors
    return result


# --------------------------------------------------------------------------- targets


def write_targets(collection: Collection, build_id: int | None = None) -> list[Target]:
    """The indices a batch must be written to, newest last.

    A batch of a rebuild (`build_id` of a build still in progress) goes to that build's index
    only. Any other batch goes to the live index and, during a rebuild, to the new index too,
    so an edit made during the rebuild is in the new index when the alias swaps. Concrete index
    names are used, not the alias: a swap in the middle of a batch must not put vectors of the
    old model into the new index.
    """
    building = current_build(collection.pk)
    if building is not None and building.dims is None:
        building = None  # its index does not exist yet; prepare_build re-queues every document
    if build_id is not None and building is not None and building.pk == build_id:
        return [Target(building.index_name, building.model_id, building.pk, building.language)]
    live = live_build(collection.pk)
    if live is None and building is None:
        live = ensure_live_build(collection)
    targets = [Target(b.index_name, b.model_id, b.pk, b.language) for b in (live, building) if b is not None]
    return targets


# --------------------------------------------------------------------------- writing


def chunk_source(item: PlannedChunk, vector: np.ndarray, language: str = "none",
                 title_terms: dict[int, str] | None = None) -> dict:
    """The chunk as Elasticsearch stores it; with an analyzed language, its keyword terms too
    (`title_terms` caches each document's title terms across its chunks)."""
    document, chunk = item.document, item.chunk
    source = {
        "collection": document.collection.slug,
        "document_id": document.pk,
        "external_id": document.external_id,
        "title": document.title,
        "text": chunk.text,
        "chunk": chunk.number,
        "start": chunk.start,
        "end": chunk.end,
        "content_hash": document.content_hash,
        "metadata": document.metadata or {},
        "embedding": vector.tolist(),
    }
    if language in ANALYZED:
        cache = title_terms if title_terms is not None else {}
        if document.pk not in cache:
            cache[document.pk] = index_terms(document.title, language)
        source["title_terms"] = cache[document.pk]
        source["text_terms"] = index_terms(chunk.text, language)
    return source


def write_to_target(target: Target, collection: Collection, documents: list[Document],
                    batch_size: int | None = None) -> dict[int, int]:
    """Chunk, encode and write `documents` into one target index; returns chunk counts by pk."""
    store = get_store()
    if not store.index_exists(target.index):
        # Never let a bulk write auto-create it with a guessed mapping.
        raise IndexMissing(f"index {target.index} does not exist (deleted, or the cluster lost its data); "
                           "run rebuild_index")
    started = time.perf_counter()
    planned = plan_chunks(documents, collection, target.model_id)
    planned_at = time.perf_counter()
    vectors = encode_chunks(target.model_id, planned, batch_size)
    encoded_at = time.perf_counter()
    counts = {d.pk: 0 for d in documents}
    for item in planned:
        counts[item.document.pk] += 1
    titles: dict[int, str] = {}
    writes = [ChunkWrite(chunk_id(collection.slug, item.document.external_id, item.chunk.number),
                         chunk_source(item, vector, target.language, titles))
              for item, vector in zip(planned, vectors)]
    analyzed_at = time.perf_counter()
    stale = store.stale_chunk_ids(
        target.index, {f"{collection.slug}/{d.external_id}": counts[d.pk] for d in documents}
    )
    store.write_chunks(target.index, writes, delete_ids=stale)
    log.info("%s: %d documents, %d chunks (%d stale deleted): chunking %.2fs, encoding %.2fs, "
             "analysis (%s) %.2fs, writing %.2fs", target.index, len(documents), len(planned), len(stale),
             planned_at - started, encoded_at - planned_at, target.language, analyzed_at - encoded_at,
             time.perf_counter() - analyzed_at)
    return counts


# --------------------------------------------------------------------------- the task bodies


@dataclass
class IndexReport:
    """One batch: documents written (in `collection_ids`), their chunks, ids skipped (removed or
    deleted meanwhile)."""

    indexed: int = 0
    chunks: int = 0
    skipped: int = 0
    collection_ids: list[int] = field(default_factory=list)


def index_documents(document_ids: list[int], build_id: int | None = None,
                    batch_size: int | None = None) -> IndexReport:
    """Index one batch of documents (see the module docstring)."""
    ids = sorted(set(document_ids))
    rows = list(Document.objects.select_related("collection").filter(pk__in=ids)
                .exclude(status=Document.Status.REMOVED))
    report = IndexReport(skipped=len(ids) - len(rows))
    if not rows:
        return report
    Document.objects.filter(pk__in=[d.pk for d in rows]).update(
        status=Document.Status.INDEXING, updated_at=timezone.now()
    )
    by_collection: dict[int, list[Document]] = {}
    for row in rows:
        by_collection.setdefault(row.collection_id, []).append(row)
    for documents in by_collection.values():
        collection = documents[0].collection
        targets = write_targets(collection, build_id)
        counts: dict[int, int] = {}
        for target in targets:
            try:
                counts = write_to_target(target, collection, documents, batch_size)
            except IndexMissing:
                if target is targets[-1]:
                    raise
                # An older index retired and deleted by a swap in the meantime: nothing to update.
                log.info("index %s is gone, skipping it", target.index)
        mark_indexed(documents, counts, targets[-1])
        report.indexed += len(documents)
        report.chunks += sum(counts.values())
        report.collection_ids.append(collection.pk)
    return report


def mark_indexed(documents: list[Document], counts: dict[int, int], target: Target) -> None:
    """Statuses of one batch in one transaction. A row edited while we worked keeps its newer
    `queued` status: its own message indexes the new text."""
    now = timezone.now()
    with transaction.atomic():
        for document in documents:
            Document.objects.filter(pk=document.pk, content_hash=document.content_hash).exclude(
                status=Document.Status.REMOVED
            ).update(
                status=Document.Status.INDEXED, indexed_hash=document.content_hash,
                indexed_model=target.model_id, chunk_count=counts.get(document.pk, 0),
                indexed_at=now, updated_at=now, last_error="",
            )


@dataclass(frozen=True)
class RemovalReport:
    documents: int
    chunks_deleted: int


def remove_documents(document_ids: list[int]) -> RemovalReport:
    """"Remove from index": the rows stay (status `removed`), their chunks go from every index."""
    store = get_store()
    rows = list(Document.objects.filter(pk__in=document_ids).values_list("pk", "collection_id"))
    removed = 0
    for collection_id in {c for _, c in rows}:
        pks = [pk for pk, c in rows if c == collection_id]
        for index in collection_indices(collection_id):
            removed += store.remove_chunks(index, pks)
        with transaction.atomic():
            Document.objects.filter(pk__in=pks).update(
                status=Document.Status.REMOVED, chunk_count=0, indexed_hash="", indexed_model="",
                indexed_at=None, last_error="", updated_at=timezone.now(),
            )
    return RemovalReport(documents=len(rows), chunks_deleted=removed)


def remove_deleted_documents(collection_id: int, document_ids: list[int]) -> RemovalReport:
    """Chunks of documents deleted from the database."""
    store = get_store()
    removed = 0
    for index in collection_indices(collection_id):
        removed += store.remove_chunks(index, list(document_ids))
    return RemovalReport(documents=len(document_ids), chunks_deleted=removed)
