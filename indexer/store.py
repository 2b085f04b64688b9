"""The one module that talks to the search engine: client, index layout, writes, reads for checks,
aliases, deletion, and the query path's searches.

    alias  <prefix>-<collection-slug>                   reads and writes go here
    index  <prefix>-<collection-slug>-<build timestamp> the physical index of one build

A rebuild writes into a new index while the alias keeps serving the old one, then swaps the
alias atomically (indexer/builds.py).

`get_store()` answers the store of `settings.SEARCH_BACKEND` (default `elasticsearch`; module
map in docs/indexing.md). `Store` lists what the rest of the project asks of an engine, so a second engine (OpenSearch) is one more
subclass; nothing else in the indexer imports the engine's client library. The engine's errors
are translated here into the exceptions below where a caller must tell them apart: an index that
is gone, a refusal that goes away by itself (worth a retry), anything else. Connection failures
and timeouts keep the client library's own exception types (they name the problem best in a
document's error text); `Store.transient_errors` lists them for the task retry policy.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone
from elasticsearch import ApiError, ConnectionTimeout, Elasticsearch, TransportError, helpers
from elasticsearch import ConnectionError as ESConnectionError

from .analysis import ANALYZED, check_language

log = logging.getLogger(__name__)

INDEX_OPTION_TYPES = ("hnsw", "int8_hnsw", "bbq_hnsw")
# Stale chunks are looked up by id with realtime GETs in runs of this many.
STALE_PROBE = 16


class StoreError(Exception):
    """The engine refused or failed a request (a mapping that rejects a chunk, a bad query...):
    retrying will not help."""


class StoreUnavailable(StoreError):
    """The engine refused for a reason that goes away by itself (busy, restarting): retry."""


class IndexMissing(StoreError):
    """The index does not exist (deleted, or the cluster lost its data)."""


def alias_name(collection_slug: str) -> str:
    return f"{settings.ELASTICSEARCH_INDEX_PREFIX}-{collection_slug}"


def new_index_name(collection_slug: str) -> str:
    return f"{alias_name(collection_slug)}-{timezone.now().strftime('%Y%m%d%H%M%S%f')}"


def check_index_options(index_options: str) -> str:
    if index_options not in INDEX_OPTION_TYPES:
        raise ValueError(f"index_options must be one of {INDEX_OPTION_TYPES}, not {index_options!r}")
    return index_options


@dataclass
class IndexedDocument:
    """What an index holds of one document: its chunks, the highest chunk number, the content
    hashes its chunks were written from (more than one: chunks of two versions)."""

    chunks: int = 0
    max_chunk: int = -1
    hashes: set[str] = field(default_factory=set)

    def holds(self, content_hash: str) -> bool:
        """Every chunk is there (numbered without gaps) and of this version of the text."""
        return self.hashes == {content_hash} and self.chunks == self.max_chunk + 1


@dataclass(frozen=True)
class ChunkWrite:
    """One chunk to write: its deterministic id and the document the engine stores."""

    id: str
    source: dict


@dataclass(frozen=True)
class ClusterHealth:
    name: str
    status: str  # green, yellow or red
    versions: list[str]

    @property
    def ok(self) -> bool:
        return self.status in ("green", "yellow")


class Store:
    """What the project asks of a search engine. Index names are concrete indices unless the
    argument says alias."""

    # Exceptions worth a retry with backoff (the engine unreachable, slow or busy).
    transient_errors: tuple[type[BaseException], ...] = (StoreUnavailable,)

    # -- indices and aliases
    def create_index(self, index: str, *, dims: int, model_id: str, index_options: str, language: str,
                     shards: int = 1, replicas: int = 0) -> None:
        raise NotImplementedError

    def index_exists(self, index: str) -> bool:
        raise NotImplementedError

    def index_meta(self, index: str) -> dict:
        """The metadata `create_index` recorded (model, dims, index options, language)."""
        raise NotImplementedError

    def pause_refresh(self, index: str) -> None:
        """No periodic refresh while a build fills the index."""
        raise NotImplementedError

    def resume_refresh(self, index: str) -> None:
        raise NotImplementedError

    def refresh(self, index: str) -> None:
        raise NotImplementedError

    def count(self, index: str) -> int:
        raise NotImplementedError

    def indices_behind(self, alias: str) -> list[str]:
        raise NotImplementedError

    def point_alias(self, alias: str, index: str) -> None:
        """Atomically make `alias` point to `index` only."""
        raise NotImplementedError

    def delete_index(self, index: str) -> None:
        """Delete one index; one already gone is fine."""
        raise NotImplementedError

    def drop_indices(self, indices: list[str]) -> None:
        """Delete several indices (missing ones are fine)."""
        raise NotImplementedError

    # -- chunks
    def write_chunks(self, index: str, writes: list[ChunkWrite], delete_ids: Iterable[str] = ()) -> int:
        """Write chunks (overwriting by id) and delete chunks by id in bulk; returns the number of
        actions done."""
        raise NotImplementedError

    def stale_chunk_ids(self, index: str, first_stale: dict[str, int]) -> list[str]:
        raise NotImplementedError

    def remove_chunks(self, index: str, document_ids: list[int]) -> int:
        """Delete every chunk of these documents from one index (0 when the index is gone)."""
        raise NotImplementedError

    def inventory(self, index: str) -> dict[int, IndexedDocument]:
        """Per document id in an index: what it holds of that document."""
        raise NotImplementedError

    # -- the query path and health
    def msearch(self, searches: list[tuple[list[str], dict]]) -> list[list[dict]]:
        """Several searches in one round trip, each over some aliases (a missing one is skipped);
        the raw hits of each."""
        raise NotImplementedError

    def health(self, timeout: float) -> ClusterHealth:
        raise NotImplementedError


# --------------------------------------------------------------------------- Elasticsearch


@functools.lru_cache(maxsize=1)
def get_client() -> Elasticsearch:
    """The Elasticsearch client of the settings (one per process). ELASTICSEARCH_URL may name
    several nodes of one cluster, comma-separated: requests go round them, and one that fails
    to connect is retried on the next (the client's max_retries) and left out for a while."""
    hosts = [url.strip() for url in settings.ELASTICSEARCH_URL.split(",") if url.strip()]
    if not hosts:
        raise ValueError(f"ELASTICSEARCH_URL names no node: {settings.ELASTICSEARCH_URL!r}")
    kwargs: dict = {
        "request_timeout": settings.ELASTICSEARCH_TIMEOUT,
        "verify_certs": settings.ELASTICSEARCH_VERIFY_CERTS,
    }
    if settings.ELASTICSEARCH_CA_CERTS:
        kwargs["ca_certs"] = settings.ELASTICSEARCH_CA_CERTS
    if settings.ELASTICSEARCH_API_KEY:
        kwargs["api_key"] = settings.ELASTICSEARCH_API_KEY
    elif settings.ELASTICSEARCH_PASSWORD:
        kwargs["basic_auth"] = (settings.ELASTICSEARCH_USERNAME, settings.ELASTICSEARCH_PASSWORD)
    return Elasticsearch(hosts, **kwargs)


# Terms written by indexer/analysis.py, space-separated: the `whitespace` analyzer (in every
# Elasticsearch distribution) only splits them. Term frequencies are all BM25 needs (no phrase
# queries, highlights are computed in Python), and the values stay out of `_source`.
TERMS_SIMILARITY = "terms_bm25"
TERMS_FIELD = {"type": "text", "analyzer": "whitespace", "index_options": "freqs", "similarity": TERMS_SIMILARITY}
TERMS_FIELDS = ("title_terms", "text_terms")
# BM25 of the terms fields: Anserini's k1/b beat Elasticsearch's defaults on SciFact
# (docs/keyword-search.md). The `title`/`text` fields of language `none` keep the defaults.
TERMS_BM25 = {"type": "BM25", "k1": 0.9, "b": 0.4}
# HTTP statuses Elasticsearch answers when it is busy or (re)starting: worth a retry.
TRANSIENT_STATUSES = {429, 502, 503, 504}


def index_settings(shards: int = 1, replicas: int = 0) -> dict:
    return {"number_of_shards": shards, "number_of_replicas": replicas,
            "similarity": {TERMS_SIMILARITY: dict(TERMS_BM25)}}


def chunk_mapping(dims: int, index_options: str, language: str = "none") -> dict:
    """Mapping of one chunk document. Vectors are L2-normalised at encode time, so
    `dot_product` gives cosine similarity without the per-query normalisation cost.

    `title` and `text` keep the standard analyzer in every language: they are what language
    `none` searches, and an index of another language still answers a query of `none` (the
    moment between an alias swap and the database saying so, ad-hoc queries)."""
    check_index_options(index_options)
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


def _translated(method: Callable) -> Callable:
    """Elasticsearch's answers with an error status become this module's exceptions."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except ApiError as exc:
            raise _store_error(exc) from exc

    return wrapper


def _store_error(exc) -> StoreError:
    status = exc.meta.status
    message = f"Elasticsearch answered {status}: {exc.message}"
    if status == 404 and _error_type(exc) == "index_not_found_exception":
        return IndexMissing(message)
    if status in TRANSIENT_STATUSES:
        return StoreUnavailable(message)
    return StoreError(message)


def _error_type(exc) -> str | None:
    body = getattr(exc, "body", None)
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("type") if isinstance(error, dict) else None


def _is_missing_delete(error: dict) -> bool:
    """Deleting a chunk that is already gone is what we wanted."""
    return "delete" in error and error["delete"].get("status") == 404


class ElasticsearchStore(Store):
    transient_errors = (StoreUnavailable, ESConnectionError, ConnectionTimeout)

    @property
    def client(self):
        return get_client()

    @_translated
    def create_index(self, index, *, dims, model_id, index_options, language, shards=1, replicas=0):
        mapping = chunk_mapping(dims, index_options, language)
        # The model, the language and the layout are recorded in the index itself (`_meta`).
        mapping["_meta"] = {"embedding_model": model_id, "dims": dims, "index_options": index_options,
                            "language": language, "shards": shards, "replicas": replicas}
        self.client.indices.create(index=index, mappings=mapping, settings=index_settings(shards, replicas))

    @_translated
    def index_exists(self, index):
        return bool(self.client.indices.exists(index=index))

    @_translated
    def index_meta(self, index):
        return self.client.indices.get_mapping(index=index)[index]["mappings"].get("_meta", {})

    @_translated
    def pause_refresh(self, index):
        self.client.indices.put_settings(index=index, settings={"index": {"refresh_interval": "-1"}})

    @_translated
    def resume_refresh(self, index):
        self.client.indices.put_settings(index=index, settings={"index": {"refresh_interval": None}})

    @_translated
    def refresh(self, index):
        self.client.indices.refresh(index=index)

    @_translated
    def count(self, index):
        return self.client.count(index=index)["count"]

    @_translated
    def indices_behind(self, alias):
        if not self.client.indices.exists_alias(name=alias):
            return []
        return sorted(self.client.indices.get_alias(name=alias).keys())

    @_translated
    def point_alias(self, alias, index):
        actions = [{"remove": {"index": old, "alias": alias}} for old in self.indices_behind(alias) if old != index]
        actions.append({"add": {"index": index, "alias": alias, "is_write_index": True}})
        self.client.indices.update_aliases(actions=actions)

    @_translated
    def delete_index(self, index):
        self.client.options(ignore_status=404).indices.delete(index=index)

    @_translated
    def drop_indices(self, indices):
        if indices:
            self.client.options(ignore_status=404).indices.delete(index=",".join(indices))

    @_translated
    def write_chunks(self, index, writes, delete_ids=()):
        actions = [{"_op_type": "index", "_index": index, "_id": w.id, "_source": w.source} for w in writes]
        actions += [{"_op_type": "delete", "_index": index, "_id": i} for i in delete_ids]
        return self._bulk(actions)

    def _bulk(self, actions: list[dict]) -> int:
        """429s are retried by the helper itself; what is left is raised."""
        if not actions:
            return 0
        ok, errors = helpers.bulk(
            self.client, actions, chunk_size=500, max_retries=3, initial_backoff=1,
            raise_on_error=False, raise_on_exception=True, stats_only=False,
        )
        errors = [e for e in errors if not _is_missing_delete(e)]
        if errors:
            statuses = {next(iter(e.values())).get("status") for e in errors}
            sample = next(iter(errors[0].values()))
            message = f"{len(errors)} of {len(actions)} bulk actions failed, e.g. {sample.get('error')}"
            if statuses & TRANSIENT_STATUSES:
                raise StoreUnavailable(message)
            raise StoreError(message)
        return ok

    @_translated
    def stale_chunk_ids(self, index, first_stale):
        """Ids of chunks numbered from `first_stale[prefix]` on, for each `<collection>/<external>`
        prefix. Chunks of a document are numbered without gaps, so probing runs of ids with
        realtime multi-GETs finds them all, including chunks written a moment ago and not yet
        visible to search."""
        found: list[str] = []
        pending = dict(first_stale)
        while pending:
            ids = [f"{prefix}/{n}" for prefix, start in pending.items() for n in range(start, start + STALE_PROBE)]
            docs = self.client.mget(index=index, ids=ids, source=False, realtime=True)["docs"]
            hits = {d["_id"] for d in docs if d.get("found")}
            found.extend(i for i in ids if i in hits)
            # A full run of hits means there may be more after it.
            pending = {prefix: start + STALE_PROBE for prefix, start in pending.items()
                       if f"{prefix}/{start + STALE_PROBE - 1}" in hits}
        return found

    def remove_chunks(self, index, document_ids):
        try:
            ids = self._chunk_ids(index, document_ids)
        except IndexMissing:
            return 0  # the index itself is gone
        return self.write_chunks(index, [], delete_ids=ids)

    @_translated
    def _chunk_ids(self, index: str, document_ids: list[int]) -> list[str]:
        self.client.indices.refresh(index=index)  # deletions must see chunks written a moment ago
        body = {"query": {"terms": {"document_id": document_ids}}, "_source": False}
        return [h["_id"] for h in helpers.scan(self.client, index=index, query=body, size=1000)]

    @_translated
    def inventory(self, index):
        inventory: dict[int, IndexedDocument] = {}
        after = None
        while True:
            composite = {"size": 1000, "sources": [{"doc": {"terms": {"field": "document_id"}}},
                                                   {"hash": {"terms": {"field": "content_hash"}}}]}
            if after:
                composite["after"] = after
            result = self.client.search(index=index, size=0, aggs={
                "docs": {"composite": composite, "aggs": {"max_chunk": {"max": {"field": "chunk"}}}}
            })["aggregations"]["docs"]
            for bucket in result["buckets"]:
                entry = inventory.setdefault(bucket["key"]["doc"], IndexedDocument())
                entry.chunks += bucket["doc_count"]
                entry.max_chunk = max(entry.max_chunk, int(bucket["max_chunk"]["value"]))
                entry.hashes.add(bucket["key"]["hash"])
            after = result.get("after_key")
            if not after or not result["buckets"]:
                return inventory

    def msearch(self, searches):
        lines = []
        for aliases, body in searches:
            lines += [{"index": ",".join(aliases), "ignore_unavailable": True, "allow_no_indices": True}, body]
        try:
            responses = self.client.msearch(searches=lines)["responses"]
        except ApiError as exc:
            raise StoreError(f"Elasticsearch: {exc}") from exc
        except TransportError as exc:
            raise StoreUnavailable(f"Elasticsearch: {exc}") from exc
        results = []
        for response in responses:
            if "error" in response:
                error = response["error"]
                raise StoreError(f"Elasticsearch: {error.get('reason') if isinstance(error, dict) else error}")
            results.append(response["hits"]["hits"])
        return results

    @_translated
    def health(self, timeout):
        client = self.client.options(request_timeout=timeout, max_retries=0)
        health = client.cluster.health()
        # `GET /` is missing from Elastic's test distribution; nodes info works everywhere.
        nodes = client.nodes.info(filter_path="nodes.*.version")
        versions = sorted({n["version"] for n in nodes.get("nodes", {}).values()})
        return ClusterHealth(name=health["cluster_name"], status=health["status"], versions=versions)


STORES: dict[str, type[Store]] = {"elasticsearch": ElasticsearchStore}


@functools.lru_cache(maxsize=1)
def get_store() -> Store:
    """The store of `settings.SEARCH_BACKEND` (one per process)."""
    name = getattr(settings, "SEARCH_BACKEND", "elasticsearch")
    try:
        return STORES[name]()
    except KeyError:
        raise ValueError(f"SEARCH_BACKEND must be one of {sorted(STORES)}, not {name!r}") from None
