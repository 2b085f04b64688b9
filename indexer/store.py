"""The one module that talks to the search engine: client, index layout, writes, reads for checks,
aliases, deletion, and the query path's searches.

    alias  <prefix>-<collection-slug>                   reads and writes go here
    index  <prefix>-<collection-slug>-<build timestamp> the physical index of one build

A rebuild writes into a new index while the alias keeps serving the old one, then swaps the
alias atomically (indexer/builds.py).

`get_store()` answers the store of `settings.SEARCH_ENGINE` (`elasticsearch`, the default, or
`opensearch`; module map in docs/indexing.md). `Store` lists what the rest of the project asks
of an engine; `ElasticsearchStore` and `OpenSearchStore` are its two subclasses, both here: they
share the chunk fields, the BM25 similarity and the error classes, and a module per engine would
import the registry back from this one. Nothing else imports an engine's client library, and
the query path builds its kNN clause through `Store.knn_search_body` (the one place where the
two engines' query languages differ). The engine's errors
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
from opensearchpy import ConnectionError as OSConnectionError
from opensearchpy import ConnectionTimeout as OSConnectionTimeout
from opensearchpy import OpenSearch, TransportError as OSTransportError
from opensearchpy import helpers as os_helpers

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
    """The value itself, or ValueError naming the layouts the engine in use offers."""
    store = get_store()
    if index_options not in store.index_option_types:
        raise ValueError(f"index_options must be one of {store.index_option_types} on {store.engine}, "
                         f"not {index_options!r}")
    return index_options


def default_index_options() -> str:
    """A new collection's vector layout: the engine's best (docs/indexing.md)."""
    return get_store().default_index_options


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

    engine = ""  # what /healthz and error messages call it
    url = ""  # where it answers
    # Exceptions worth a retry with backoff (the engine unreachable, slow or busy).
    transient_errors: tuple[type[BaseException], ...] = (StoreUnavailable,)
    # The vector layouts (Collection.index_options) this engine can build, and a new collection's.
    index_option_types: tuple[str, ...] = ()
    default_index_options = ""

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
    def knn_search_body(self, vector: list[float], *, k: int, num_candidates: int, filters: list[dict]) -> dict:
        """The part of a search body that asks for the `k` chunks nearest to `vector` among those
        matching every one of `filters` (applied inside the HNSW search, not after it),
        examining `num_candidates` candidates; the caller adds size, sort and `_source`. Scores
        are (1 + cosine) / 2 on both engines."""
        raise NotImplementedError

    def msearch(self, searches: list[tuple[list[str], dict]]) -> list[dict]:
        """Several searches in one round trip, each over some aliases (IndexMissing when one does
        not exist); the answer of each (`hits.hits`, `aggregations`); an error in any is raised."""
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


def index_meta_record(model_id: str, dims: int, index_options: str, language: str, shards: int,
                      replicas: int) -> dict:
    """What an index records about itself in its mapping's `_meta`, on every engine: a build that
    adopts an existing alias (builds.ensure_live_build) reads the model, language and layout back."""
    return {"embedding_model": model_id, "dims": dims, "index_options": index_options, "language": language,
            "shards": shards, "replicas": replicas}


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
    return chunk_fields(language, {
        # Arbitrary per-document fields, filterable as metadata.<key> (exact values).
        "metadata": {"type": "flattened"},
        "embedding": {
            "type": "dense_vector",
            "dims": dims,
            "index": True,
            "similarity": "dot_product",
            "index_options": {"type": index_options},
        },
    })


def chunk_fields(language: str, engine_fields: dict) -> dict:
    """The mapping both engines give a chunk, with the engine's own `metadata` and `embedding`."""
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
            **engine_fields,
        },
    }
    if language in ANALYZED:
        mapping["properties"].update({field: dict(TERMS_FIELD) for field in TERMS_FIELDS})
        mapping["_source"] = {"excludes": list(TERMS_FIELDS)}
    return mapping


def _translated(method: Callable) -> Callable:
    """The engine's answers with an error status become this module's exceptions (each store
    class says which of its client's exceptions those are, and how they read)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except self.passed_through_errors:
            raise
        except self.answer_errors as exc:
            raise self.store_error(exc) from exc

    return wrapper


def _classified(status, error_type: str | None, message: str) -> StoreError:
    """The exception of an engine's error answer, by its HTTP status and error type (the same
    rule for both engines, for a whole request or for one search of an msearch)."""
    if status == 404 and error_type == "index_not_found_exception":
        return IndexMissing(message)
    if isinstance(status, int) and status in TRANSIENT_STATUSES:
        return StoreUnavailable(message)
    return StoreError(message)


def _store_error(exc) -> StoreError:
    status = exc.meta.status
    return _classified(status, _error_type(exc), f"Elasticsearch answered {status}: {exc.message}")


def _error_type(exc) -> str | None:
    body = getattr(exc, "body", None)
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("type") if isinstance(error, dict) else None


def _is_missing_delete(error: dict) -> bool:
    """Deleting a chunk that is already gone is what we wanted."""
    return "delete" in error and error["delete"].get("status") == 404


def _raise_bulk_errors(errors: list[dict], actions: int) -> None:
    """The bulk helper's failed items (either engine's: same shape) as one exception."""
    errors = [e for e in errors if not _is_missing_delete(e)]
    if errors:
        statuses = {next(iter(e.values())).get("status") for e in errors}
        sample = next(iter(errors[0].values()))
        message = f"{len(errors)} of {actions} bulk actions failed, e.g. {sample.get('error')}"
        if statuses & TRANSIENT_STATUSES:
            raise StoreUnavailable(message)
        raise StoreError(message)


class _ClientStore(Store):
    """What both engines' Python clients (elasticsearch-py, opensearch-py) spell alike."""

    helpers = helpers  # the client library's bulk and scan helpers
    # The client's exceptions for an answer with an error status (StoreError by `store_error`),
    # and those raised as they are (transient_errors: their own types name the problem best).
    answer_errors: tuple[type[BaseException], ...] = ()
    passed_through_errors: tuple[type[BaseException], ...] = ()

    def store_error(self, exc) -> StoreError:
        raise NotImplementedError

    @_translated
    def index_exists(self, index):
        return bool(self.client.indices.exists(index=index))

    @_translated
    def index_meta(self, index):
        return self.client.indices.get_mapping(index=index)[index]["mappings"].get("_meta", {})

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
    def write_chunks(self, index, writes, delete_ids=()):
        actions = [{"_op_type": "index", "_index": index, "_id": w.id, "_source": w.source} for w in writes]
        actions += [{"_op_type": "delete", "_index": index, "_id": i} for i in delete_ids]
        return self._bulk(actions)

    def _bulk(self, actions: list[dict]) -> int:
        """429s are retried by the helper itself; what is left is raised."""
        if not actions:
            return 0
        ok, errors = self.helpers.bulk(
            self.client, actions, chunk_size=500, max_retries=3, initial_backoff=1,
            raise_on_error=False, raise_on_exception=True, stats_only=False,
        )
        _raise_bulk_errors(errors, len(actions))
        return ok

    def remove_chunks(self, index, document_ids):
        try:
            ids = self._chunk_ids(index, document_ids)
        except IndexMissing:
            return 0  # the index itself is gone
        return self.write_chunks(index, [], delete_ids=ids)

    @_translated
    def msearch(self, searches):
        # Every alias named must exist (the search leaves out collections with nothing indexed
        # yet), so an index lost from the engine is an error, never an empty answer.
        lines = []
        for aliases, body in searches:
            lines += [{"index": ",".join(aliases)}, body]
        responses = self._send_msearch(lines)
        for response in responses:
            if "error" in response:
                raise self._search_error(response)
        return responses

    def _send_msearch(self, lines: list[dict]) -> list[dict]:
        raise NotImplementedError

    def _search_error(self, response: dict) -> StoreError:
        """One search's error inside an msearch answer, as this module's exception."""
        error = response["error"]
        if not isinstance(error, dict):
            return _classified(response.get("status"), None, f"{self.engine}: {error}")
        return _classified(response.get("status"), error.get("type"), f"{self.engine}: {error.get('reason')}")

    @_translated
    def _chunk_ids(self, index: str, document_ids: list[int]) -> list[str]:
        self.client.indices.refresh(index=index)  # deletions must see chunks written a moment ago
        body = {"query": {"terms": {"document_id": document_ids}}, "_source": False}
        return [h["_id"] for h in self.helpers.scan(self.client, index=index, query=body, size=1000)]


class ElasticsearchStore(_ClientStore):
    engine = "Elasticsearch"
    transient_errors = (StoreUnavailable, ESConnectionError, ConnectionTimeout)
    index_option_types = INDEX_OPTION_TYPES
    default_index_options = "bbq_hnsw"  # best recall, least memory (docs/indexing.md)
    answer_errors = (ApiError,)

    def store_error(self, exc) -> StoreError:
        return _store_error(exc)

    @property
    def client(self):
        return get_client()

    @property
    def url(self) -> str:
        return settings.ELASTICSEARCH_URL

    @_translated
    def create_index(self, index, *, dims, model_id, index_options, language, shards=1, replicas=0):
        mapping = chunk_mapping(dims, index_options, language)
        mapping["_meta"] = index_meta_record(model_id, dims, index_options, language, shards, replicas)
        self.client.indices.create(index=index, mappings=mapping, settings=index_settings(shards, replicas))

    @_translated
    def pause_refresh(self, index):
        self.client.indices.put_settings(index=index, settings={"index": {"refresh_interval": "-1"}})

    @_translated
    def resume_refresh(self, index):
        self.client.indices.put_settings(index=index, settings={"index": {"refresh_interval": None}})

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

    def knn_search_body(self, vector, *, k, num_candidates, filters):
        return {"knn": {"field": "embedding", "query_vector": vector, "k": k,
                        "num_candidates": max(num_candidates, k), "filter": filters}}

    def _send_msearch(self, lines):
        return self.client.msearch(searches=lines)["responses"]

    @_translated
    def health(self, timeout):
        client = self.client.options(request_timeout=timeout, max_retries=0)
        health = client.cluster.health()
        # `GET /` is missing from Elastic's test distribution; nodes info works everywhere.
        nodes = client.nodes.info(filter_path="nodes.*.version")
        versions = sorted({n["version"] for n in nodes.get("nodes", {}).values()})
        return ClusterHealth(name=health["cluster_name"], status=health["status"], versions=versions)


# --------------------------------------------------------------------------- OpenSearch


@functools.lru_cache(maxsize=1)
def get_opensearch_client() -> OpenSearch:
    """The OpenSearch client of the settings (one per process)."""
    kwargs: dict = {"timeout": settings.OPENSEARCH_TIMEOUT, "verify_certs": settings.OPENSEARCH_VERIFY_CERTS}
    if settings.OPENSEARCH_CA_CERTS:
        kwargs["ca_certs"] = settings.OPENSEARCH_CA_CERTS
    if settings.OPENSEARCH_PASSWORD:
        kwargs["http_auth"] = (settings.OPENSEARCH_USERNAME, settings.OPENSEARCH_PASSWORD)
    return OpenSearch(settings.OPENSEARCH_URL, **kwargs)


# Only the k-NN plugin's `lucene` engine: its default, faiss, needs native libraries that the
# plugin from Maven Central lacks, and indexing into a faiss field kills the node
# (scripts/opensearch_probe.py). Every vector field names its engine, so the default never applies.
OPENSEARCH_KNN_ENGINE = "lucene"
# Collection.index_options in the lucene engine's words: float32 HNSW, or HNSW over Lucene's
# scalar quantiser (int8, 7 bits). It has no binary quantisation: `bbq_hnsw` is refused.
OPENSEARCH_HNSW_PARAMETERS = {
    "hnsw": {"m": 16, "ef_construction": 100},
    "int8_hnsw": {"m": 16, "ef_construction": 100, "encoder": {"name": "sq"}},
}


# Metadata values as keywords at any depth, as Elasticsearch's `flattened` keeps them: filters
# and facets compare exact values. Not `flat_object`: its subfields filter, but their terms
# aggregations (the facets) answer a bogus "java.lang.Object@..." bucket on 3.5.0
# (aggregations on flat_object are unsupported: opensearch-project/OpenSearch#14225).
OPENSEARCH_METADATA_TEMPLATES = [
    {f"metadata_{kind}": {"path_match": "metadata.*", "match_mapping_type": kind, "mapping": {"type": "keyword"}}}
    for kind in ("string", "long", "double", "boolean")
]


def opensearch_chunk_mapping(dims: int, index_options: str, language: str = "none") -> dict:
    """The chunk mapping of `chunk_mapping` in OpenSearch's words: `knn_vector` with
    `cosinesimil` (score (1 + cos) / 2, the formula of Elasticsearch's `dot_product` on the unit
    vectors we store, so scores of both engines compare), keyword metadata for `flattened`."""
    if index_options not in OPENSEARCH_HNSW_PARAMETERS:
        raise ValueError(f"index_options must be one of {tuple(OPENSEARCH_HNSW_PARAMETERS)} on OpenSearch "
                         f"(its lucene engine has no binary quantisation), not {index_options!r}")
    mapping = chunk_fields(language, {
        # The one place new fields may appear (the rest stays strict), each a keyword.
        "metadata": {"type": "object", "dynamic": True},
        "embedding": {
            "type": "knn_vector",
            "dimension": dims,
            "method": {"name": "hnsw", "engine": OPENSEARCH_KNN_ENGINE, "space_type": "cosinesimil",
                       "parameters": dict(OPENSEARCH_HNSW_PARAMETERS[index_options])},
        },
    })
    # No date detection: a value that looks like a date stays the keyword it was sent as.
    mapping.update(dynamic_templates=OPENSEARCH_METADATA_TEMPLATES, date_detection=False)
    return mapping


def _os_store_error(exc: OSTransportError) -> StoreError:
    status = exc.status_code
    return _classified(status, exc.error, f"OpenSearch answered {status}: {exc.error}: {_os_reason(exc)}")


def _os_reason(exc: OSTransportError) -> str:
    info = exc.info if isinstance(exc.info, dict) else {}
    error = info.get("error")
    if isinstance(error, dict):
        return error.get("reason") or str(error)
    return str(error or exc.info or "")


class OpenSearchStore(_ClientStore):
    engine = "OpenSearch"
    transient_errors = (StoreUnavailable, OSConnectionError, OSConnectionTimeout)
    index_option_types = tuple(OPENSEARCH_HNSW_PARAMETERS)
    default_index_options = "int8_hnsw"  # the nearest to Elasticsearch's quantised default
    helpers = os_helpers
    answer_errors = (OSTransportError,)
    passed_through_errors = (OSConnectionError, OSConnectionTimeout)  # subclasses of OSTransportError

    def store_error(self, exc) -> StoreError:
        return _os_store_error(exc)

    @property
    def client(self) -> OpenSearch:
        return get_opensearch_client()

    @property
    def url(self) -> str:
        return settings.OPENSEARCH_URL

    @_translated
    def create_index(self, index, *, dims, model_id, index_options, language, shards=1, replicas=0):
        mapping = opensearch_chunk_mapping(dims, index_options, language)
        mapping["_meta"] = index_meta_record(model_id, dims, index_options, language, shards, replicas)
        # k-NN fields need `index.knn` on their index. Vectors stay in `_source` as sent: with
        # the default "derived source" (vectors rebuilt from the vector files), reading a chunk of
        # an int8_hnsw index failed on 3.5.0 ("AlreadyClosedException ... ScalarQuantizedVectorsFormat").
        body = {"settings": {**index_settings(shards, replicas), "index.knn": True,
                             "index.knn.derived_source.enabled": False}, "mappings": mapping}
        self.client.indices.create(index=index, body=body)

    @_translated
    def pause_refresh(self, index):
        self.client.indices.put_settings(index=index, body={"index": {"refresh_interval": "-1"}})

    @_translated
    def resume_refresh(self, index):
        self.client.indices.put_settings(index=index, body={"index": {"refresh_interval": None}})

    @_translated
    def point_alias(self, alias, index):
        actions = [{"remove": {"index": old, "alias": alias}} for old in self.indices_behind(alias) if old != index]
        actions.append({"add": {"index": index, "alias": alias, "is_write_index": True}})
        self.client.indices.update_aliases(body={"actions": actions})

    @_translated
    def delete_index(self, index):
        self.client.indices.delete(index=index, ignore_unavailable=True)

    @_translated
    def drop_indices(self, indices):
        if indices:
            self.client.indices.delete(index=",".join(indices), ignore_unavailable=True)

    @_translated
    def stale_chunk_ids(self, index, first_stale):
        found: list[str] = []
        pending = dict(first_stale)
        while pending:
            ids = [f"{prefix}/{n}" for prefix, start in pending.items() for n in range(start, start + STALE_PROBE)]
            docs = self.client.mget(index=index, body={"ids": ids}, _source=False, realtime=True)["docs"]
            hits = {d["_id"] for d in docs if d.get("found")}
            found.extend(i for i in ids if i in hits)
            pending = {prefix: start + STALE_PROBE for prefix, start in pending.items()
                       if f"{prefix}/{start + STALE_PROBE - 1}" in hits}
        return found

    @_translated
    def inventory(self, index):
        inventory: dict[int, IndexedDocument] = {}
        after = None
        while True:
            composite = {"size": 1000, "sources": [{"doc": {"terms": {"field": "document_id"}}},
                                                   {"hash": {"terms": {"field": "content_hash"}}}]}
            if after:
                composite["after"] = after
            body = {"size": 0, "aggs": {"docs": {"composite": composite,
                                                 "aggs": {"max_chunk": {"max": {"field": "chunk"}}}}}}
            result = self.client.search(index=index, body=body)["aggregations"]["docs"]
            for bucket in result["buckets"]:
                entry = inventory.setdefault(bucket["key"]["doc"], IndexedDocument())
                entry.chunks += bucket["doc_count"]
                entry.max_chunk = max(entry.max_chunk, int(bucket["max_chunk"]["value"]))
                entry.hashes.add(bucket["key"]["hash"])
            after = result.get("after_key")
            if not after or not result["buckets"]:
                return inventory

    def knn_search_body(self, vector, *, k, num_candidates, filters):
        # A `knn` query; the lucene engine examines `ef_search` candidates (its default, 100,
        # gave recall@10 0.93 in scripts/opensearch_probe.py, 400 gave 1.0): the counterpart of
        # Elasticsearch's num_candidates. The filter runs inside the HNSW search.
        return {"query": {"knn": {"embedding": {
            "vector": vector, "k": k, "filter": {"bool": {"filter": filters}},
            "method_parameters": {"ef_search": max(num_candidates, k)},
        }}}}

    def _send_msearch(self, lines):
        return self.client.msearch(body=lines)["responses"]

    @_translated
    def health(self, timeout):
        health = self.client.cluster.health(request_timeout=timeout)
        nodes = self.client.nodes.info(filter_path="nodes.*.version", request_timeout=timeout)
        versions = sorted({n["version"] for n in nodes.get("nodes", {}).values()})
        return ClusterHealth(name=health["cluster_name"], status=health["status"], versions=versions)


STORES: dict[str, type[Store]] = {"elasticsearch": ElasticsearchStore, "opensearch": OpenSearchStore}


@functools.lru_cache(maxsize=1)
def get_store() -> Store:
    """The store of `settings.SEARCH_ENGINE` (one per process; settings.py checked the name)."""
    return STORES[settings.SEARCH_ENGINE]()
