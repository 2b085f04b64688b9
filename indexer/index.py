"""Elasticsearch index layout: one index per collection build, behind one alias per collection.

    alias  <prefix>-<collection-slug>                   reads and writes go here
    index  <prefix>-<collection-slug>-<build timestamp> the physical index of one build

A rebuild writes into a new index while the alias keeps serving the old one, then swaps the
alias atomically (indexer/builds.py).
"""
from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from .analysis import ANALYZED, check_language
from .es import get_client

INDEX_OPTION_TYPES = ("hnsw", "int8_hnsw", "bbq_hnsw")


def alias_name(collection_slug: str) -> str:
    return f"{settings.ELASTICSEARCH_INDEX_PREFIX}-{collection_slug}"


def new_index_name(collection_slug: str) -> str:
    return f"{alias_name(collection_slug)}-{timezone.now().strftime('%Y%m%d%H%M%S%f')}"


# Terms written by indexer/analysis.py, space-separated: the `whitespace` analyzer (in every
# Elasticsearch distribution) only splits them. Term frequencies are all BM25 needs (no phrase
# queries, highlights are computed in Python), and the values stay out of `_source`.
TERMS_SIMILARITY = "terms_bm25"
TERMS_FIELD = {"type": "text", "analyzer": "whitespace", "index_options": "freqs", "similarity": TERMS_SIMILARITY}
TERMS_FIELDS = ("title_terms", "text_terms")
# BM25 of the terms fields: k1 0.9, b 0.4 (Anserini's defaults) beat Elasticsearch's 1.2 / 0.75
# on SciFact train and dev alike (bench/keyword_analysis.py, docs/keyword-search.md). The
# `title`/`text` fields of language `none` keep Elasticsearch's defaults, as before languages.
TERMS_BM25 = {"type": "BM25", "k1": 0.9, "b": 0.4}


def index_settings(shards: int = 1, replicas: int = 0) -> dict:
    return {"number_of_shards": shards, "number_of_replicas": replicas,
            "similarity": {TERMS_SIMILARITY: dict(TERMS_BM25)}}


def chunk_mapping(dims: int, index_options: str, language: str = "none") -> dict:
    """Mapping of one chunk document. Vectors are L2-normalised at encode time, so
    `dot_product` gives cosine similarity without the per-query normalisation cost.

    `title` and `text` keep the standard analyzer in every language: they are what language
    `none` searches, and an index of another language still answers a query of `none` (the
    moment between an alias swap and the database saying so, ad-hoc queries)."""
    if index_options not in INDEX_OPTION_TYPES:
        raise ValueError(f"index_options must be one of {INDEX_OPTION_TYPES}, not {index_options!r}")
    check_language(language)
    mapping = {
        "dynamic": "strict",
        "properties": {
            "collection": {"type": "keyword"},
            "document_id": {"type": "long"},
            "external_id": {"type": "keyword"},
            "title": {"type": "text", "analyzer": "standard"},
            "text": {"type": "text", "analyzer": "standard"},
            "chunk": {"type": "integer"},
            "start": {"type": "integer"},
            "end": {"type": "integer"},
            "content_hash": {"type": "keyword"},
            # Arbitrary per-document fields, filterable as metadata.<key> (exact values).
            "metadata": {"type": "flattened"},
            "embedding": {
                "type": "dense_vector",
                "dims": dims,
                "index": True,
                "similarity": "dot_product",
                "index_options": {"type": index_options},
            },
        },
    }
    if language in ANALYZED:
        mapping["properties"].update({field: dict(TERMS_FIELD) for field in TERMS_FIELDS})
        mapping["_source"] = {"excludes": list(TERMS_FIELDS)}
    return mapping


def create_index(index: str, *, dims: int, model_id: str, index_options: str, language: str,
                 shards: int = 1, replicas: int = 0) -> None:
    """Create a build index; the model and the language are recorded in the index metadata
    (`_meta`)."""
    mapping = chunk_mapping(dims, index_options, language)
    mapping["_meta"] = {"embedding_model": model_id, "dims": dims, "index_options": index_options,
                        "language": language}
    get_client().indices.create(index=index, mappings=mapping, settings=index_settings(shards, replicas))


def indices_behind(alias: str) -> list[str]:
    client = get_client()
    if not client.indices.exists_alias(name=alias):
        return []
    return sorted(client.indices.get_alias(name=alias).keys())


def point_alias(alias: str, index: str) -> None:
    """Atomically make `alias` point to `index` only."""
    actions = [{"remove": {"index": old, "alias": alias}} for old in indices_behind(alias) if old != index]
    actions.append({"add": {"index": index, "alias": alias, "is_write_index": True}})
    get_client().indices.update_aliases(actions=actions)
