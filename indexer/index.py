"""Elasticsearch index layout: one index per collection build, behind one alias per collection.

    alias  <prefix>-<collection-slug>                   reads and writes go here
    index  <prefix>-<collection-slug>-<build timestamp> the physical index of one build

A rebuild writes into a new index while the alias keeps serving the old one, then swaps the
alias atomically (indexer/builds.py).
"""
from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from .es import get_client

INDEX_OPTION_TYPES = ("hnsw", "int8_hnsw", "bbq_hnsw")


def alias_name(collection_slug: str) -> str:
    return f"{settings.ELASTICSEARCH_INDEX_PREFIX}-{collection_slug}"


def new_index_name(collection_slug: str) -> str:
    return f"{alias_name(collection_slug)}-{timezone.now().strftime('%Y%m%d%H%M%S%f')}"


def chunk_mapping(dims: int, index_options: str) -> dict:
    """Mapping of one chunk document. Vectors are L2-normalised at encode time, so
    `dot_product` gives cosine similarity without the per-query normalisation cost."""
    if index_options not in INDEX_OPTION_TYPES:
        raise ValueError(f"index_options must be one of {INDEX_OPTION_TYPES}, not {index_options!r}")
    return {
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


def create_index(index: str, *, dims: int, model_id: str, index_options: str, shards: int = 1,
                 replicas: int = 0) -> None:
    """Create a build index; the model is recorded in the index metadata (`_meta`)."""
    mapping = chunk_mapping(dims, index_options)
    mapping["_meta"] = {"embedding_model": model_id, "dims": dims, "index_options": index_options}
    get_client().indices.create(
        index=index,
        mappings=mapping,
        settings={"number_of_shards": shards, "number_of_replicas": replicas},
    )


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
