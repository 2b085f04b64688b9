"""The document page (/documents/<id>): one document, access-checked like a search, with the
chunks its collection's live index holds for it.

Chunks come from the search engine (the collection's alias), not from chunking the text again: the
page shows exactly what was indexed and searched, with the model and chunk settings of the build
that serves, even while a rebuild with other settings is running or after the settings changed.
Their `start`/`end` are character offsets into Document.text (indexer/chunking.py), so the
matched chunk is marked in the full text; when the text no longer holds the chunk there (the
document was edited and not re-indexed yet), the page says so instead of marking the wrong span.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from indexer.models import Document

from .errors import SearchBackendError
from .retrieval import msearch, visible_collections

logger = logging.getLogger(__name__)

# More chunks than any document of the sizes we accept has; the page lists them all.
MAX_CHUNKS = 10000


@dataclass
class IndexedChunk:
    number: int
    start: int
    end: int
    text: str


@dataclass
class DocumentView:
    document: Document
    chunks: list[IndexedChunk]
    chunk: IndexedChunk | None = None  # the one asked for (?chunk=N)
    # The full text in three parts around the marked chunk: before, marked, after.
    parts: tuple[str, str, str] = ("", "", "")
    text_matches_index: bool = True
    problems: list[str] = field(default_factory=list)


def visible_document(user, document_id: int) -> Document | None:
    """The document, if it is in a collection `user` may see: None otherwise, the same answer as
    for a document that does not exist (its existence is not revealed)."""
    return (Document.objects.select_related("collection")
            .filter(pk=document_id, collection__in=visible_collections(user)).first())


def indexed_chunks(document: Document) -> list[IndexedChunk]:
    """The document's chunks as its collection's live index holds them, in order."""
    body = {"query": {"bool": {"filter": [{"term": {"document_id": document.pk}},
                                          {"term": {"collection": document.collection.slug}}]}},
            "size": MAX_CHUNKS, "sort": [{"chunk": "asc"}], "_source": ["chunk", "start", "end", "text"],
            "track_total_hits": False}
    # Through the search's msearch: a collection with nothing indexed yet answers no hits, one
    # whose index is gone an error.
    response = msearch([([document.collection.slug], body)])[0]
    return [IndexedChunk(s["chunk"], s["start"], s["end"], s.get("text", ""))
            for s in (raw["_source"] for raw in response["hits"]["hits"])]


def document_view(document: Document, chunk_number: int | None) -> DocumentView:
    view = DocumentView(document=document, chunks=[], parts=(document.text, "", ""))
    try:
        view.chunks = indexed_chunks(document)
    except SearchBackendError as exc:
        logger.error("document %s: %s", document.pk, exc)
        view.problems.append(f"The indexed chunks cannot be read right now: {exc.public}.")
        return view
    if chunk_number is None:
        return view
    view.chunk = next((c for c in view.chunks if c.number == chunk_number), None)
    if view.chunk is None:
        view.problems.append(f"This document has no indexed chunk {chunk_number}.")
        return view
    start, end = view.chunk.start, view.chunk.end
    if document.text[start:end] != view.chunk.text:
        view.text_matches_index = False
        view.problems.append("The document's text changed since it was indexed: the matched chunk is shown "
                             "below as indexed, not marked in the text.")
        return view
    view.parts = (document.text[:start], document.text[start:end], document.text[end:])
    return view
