"""Helpers shared by the indexing tests (tests/integration/test_pipeline.py, test_failures.py)."""
from __future__ import annotations

import time

from django.conf import settings
from django.db import transaction

from indexer.models import Collection, Document, IndexBuild
from indexer.store import alias_name
from indexer.tasks import queue_for_indexing

WORDS = ("protein cell gene tumour receptor signalling mutation therapy vaccine immune neuron "
         "insulin glucose lipid membrane enzyme kinase antibody virus bacteria").split()


# The embed worker the failure drills drive (tests/integration/test_failures.py, test_cluster.py):
# small batches (a build is many messages, so there is a "middle" to break), quick recovery of
# messages of a killed worker, quick retries, and enough of them to outlast an Elasticsearch restart.
TUNED = {
    "INDEX_BATCH_SIZE": "3",
    "CELERY_VISIBILITY_TIMEOUT": "15",
    "CELERY_UNACKED_RESTORE_INTERVAL": "1",
    "INDEX_RETRY_BACKOFF": "1",
    "INDEX_RETRY_BACKOFF_MAX": "8",
    "INDEX_MAX_RETRIES": "60",
}


def make_text(seed: int, words: int) -> str:
    """Deterministic varied prose-like text of `words` words."""
    out = []
    for i in range(words):
        out.append(WORDS[(seed * 7 + i * (seed % 5 + 1)) % len(WORDS)] + ("." if i % 12 == 11 else ""))
    return " ".join(out)


def make_collection(slug: str, n: int, *, long_every: int = 5, **fields) -> Collection:
    """A collection of `n` short documents; every `long_every`-th one spans several chunks."""
    collection = Collection.objects.create(name=slug, slug=slug, **fields)
    docs = []
    for i in range(n):
        title = f"Study {i} of {WORDS[i % len(WORDS)]}"
        text = make_text(i, 420 if long_every and i % long_every == 0 else 40 + i % 30)
        docs.append(Document(collection=collection, external_id=f"d{i:03d}", title=title, text=text,
                             metadata={"n": i}, content_hash=Document.compute_hash(title, text, {"n": i})))
    Document.objects.bulk_create(docs)
    return collection


def index_all(collection: Collection) -> None:
    with transaction.atomic():
        queue_for_indexing(collection.documents.values_list("pk", flat=True))


def wait_for(predicate, timeout: float = 120, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def all_indexed(collection: Collection) -> bool:
    docs = Document.objects.filter(collection=collection).exclude(status=Document.Status.REMOVED)
    return not docs.exclude(status=Document.Status.INDEXED).exists()


def statuses(collection: Collection) -> dict[str, int]:
    from collections import Counter

    return dict(Counter(Document.objects.filter(collection=collection).values_list("status", flat=True)))


def es_chunks(es, collection: Collection, index: str | None = None) -> list[dict]:
    """Every chunk in the collection's alias (or an index), after a refresh. `es`: either
    engine's client (tests/integration/conftest.py), scanned with its own library's helper."""
    from elasticsearch import helpers as es_helpers
    from opensearchpy import OpenSearch
    from opensearchpy import helpers as os_helpers

    helpers = os_helpers if isinstance(es, OpenSearch) else es_helpers
    index = index or alias_name(collection.slug)
    es.indices.refresh(index=index)
    body = {"query": {"match_all": {}}, "_source": ["document_id", "external_id", "chunk", "content_hash"]}
    return [{"_id": h["_id"], **h["_source"]} for h in helpers.scan(es, index=index, query=body, size=1000)]


def expected_chunk_counts(collection: Collection, model_id: str | None = None) -> dict[int, int]:
    """Chunk counts computed here, in the test process, with the pipeline's own planning."""
    from indexer.pipeline import plan_chunks

    collection.refresh_from_db()
    docs = list(Document.objects.filter(collection=collection).exclude(status=Document.Status.REMOVED))
    counts = {d.pk: 0 for d in docs}
    for item in plan_chunks(docs, collection, model_id or collection.embedding_model):
        counts[item.document.pk] += 1
    return counts


def assert_index_exact(es, collection: Collection, model_id: str | None = None, index: str | None = None):
    """The index holds exactly the planned chunks of every indexable document: no duplicate,
    no stale one, no missing one; the database records the same counts."""
    expected = expected_chunk_counts(collection, model_id)
    chunks = es_chunks(es, collection, index)
    ids = [c["_id"] for c in chunks]
    assert len(ids) == len(set(ids)) == sum(expected.values())
    seen = {(c["document_id"], c["chunk"]) for c in chunks}
    assert len(seen) == len(chunks)  # no document/chunk pair twice under different ids
    want = {(pk, n) for pk, count in expected.items() for n in range(count)}
    assert seen == want
    for c in chunks:
        assert c["_id"] == f"{collection.slug}/{c['external_id']}/{c['chunk']}"
    db_counts = dict(Document.objects.filter(pk__in=expected).values_list("pk", "chunk_count"))
    assert db_counts == expected
    hashes = dict(Document.objects.filter(pk__in=expected).values_list("pk", "content_hash"))
    assert all(c["content_hash"] == hashes[c["document_id"]] for c in chunks)
    return len(chunks)


def key_prefix() -> str:
    return settings.CELERY_KEY_PREFIX


def assert_build_live_and_exact(es, collection: Collection, build: IndexBuild, model_id: str | None = None):
    """The build went live; every document is indexed; its index holds exactly the planned chunks
    (assert_index_exact), as many as the alias serves and the build counted."""
    wait_for(lambda: IndexBuild.objects.get(pk=build.pk).status in (IndexBuild.Status.LIVE, IndexBuild.Status.FAILED),
             timeout=300, what=f"build to finish, statuses {statuses(collection)}")
    build.refresh_from_db()
    assert build.status == IndexBuild.Status.LIVE, build.error
    assert statuses(collection) == {"indexed": collection.documents.count()}
    total = assert_index_exact(es, collection, model_id=model_id, index=build.index_name)
    assert es.count(index=alias_name(collection.slug))["count"] == total == build.done_chunks
    assert build.done_documents == build.total_documents == collection.documents.count()
    return total
