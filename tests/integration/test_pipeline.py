"""The indexing pipeline through real Celery workers, the search engine and Redis (the tests
marked `backend` run against both engines: tests/integration/conftest.py)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import transaction
from django.urls import reverse

from indexer.builds import BuildInProgress
from indexer.embedding import load_embedding_model
from indexer.models import Document, IndexBuild
from indexer.store import alias_name, get_store
from indexer.tasks import queue_for_indexing, queue_for_removal, start_build
from tests.support.indexing import all_indexed, assert_index_exact, es_chunks, index_all, make_collection, statuses, wait_for
from tests.support.workers import ROOT, worker_env

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = settings.EMBEDDING_MODEL


@pytest.mark.backend
def test_documents_become_searchable_chunks(es, celery_workers):
    collection = make_collection("pipe-basic", 12)
    index_all(collection)
    wait_for(lambda: all_indexed(collection), what=f"all indexed, now {statuses(collection)}")

    total = assert_index_exact(es, collection)
    assert total > 12  # the long documents span several chunks
    live = IndexBuild.objects.get(collection=collection, status=IndexBuild.Status.LIVE)
    alias = alias_name(collection.slug)
    assert get_store().indices_behind(alias) == [live.index_name]
    meta = get_store().index_meta(live.index_name)
    assert meta["embedding_model"] == MODEL == live.model_id and meta["dims"] == 384
    # What a build adopting this alias reads back (builds.ensure_live_build), on every engine.
    assert (meta["shards"], meta["replicas"], meta["language"]) == (live.shards, live.replicas, live.language)
    doc = Document.objects.get(collection=collection, external_id="d003")
    assert doc.indexed_model == MODEL and doc.indexed_hash == doc.content_hash and doc.indexed_at

    # The stored vector is the unit-length embedding of title + chunk text.
    model = load_embedding_model(MODEL)
    query = model.encode_documents([doc.text])[0]
    knn = get_store().knn_search_body(query.tolist(), k=3, num_candidates=50,
                                      filters=[{"terms": {"collection": [collection.slug]}}])
    hits = es.search(index=alias, body={**knn, "size": 3})["hits"]["hits"]
    assert hits[0]["_source"]["external_id"] == "d003"
    stored = np.array(es.get(index=alias, id=f"{collection.slug}/d003/0")["_source"]["embedding"])
    assert abs(np.linalg.norm(stored) - 1) < 1e-3
    # Offsets point back into the document text.
    source = es.get(index=alias, id=f"{collection.slug}/d000/1")["_source"]
    assert Document.objects.get(pk=source["document_id"]).text[source["start"]:source["end"]] == source["text"]


@pytest.mark.backend
def test_reindex_overwrites_and_shrinking_drops_stale_chunks(es, celery_workers):
    collection = make_collection("pipe-shrink", 6)
    index_all(collection)
    wait_for(lambda: all_indexed(collection), what="first indexing")
    before = assert_index_exact(es, collection)

    # Indexing the same documents again changes nothing: deterministic ids overwrite.
    index_all(collection)
    wait_for(lambda: all_indexed(collection), what="second indexing")
    assert assert_index_exact(es, collection) == before

    long_doc = Document.objects.get(collection=collection, external_id="d000")
    assert long_doc.chunk_count >= 3
    with transaction.atomic():
        long_doc.text = "only a few words now"
        long_doc.refresh_hash()
        long_doc.save()
        queue_for_indexing([long_doc.pk])
    wait_for(lambda: all_indexed(collection), what="shrunk document indexed")
    assert Document.objects.get(pk=long_doc.pk).chunk_count == 1
    assert assert_index_exact(es, collection) == before - long_doc.chunk_count + 1


@pytest.mark.backend
def test_remove_delete_document_and_collection(es, celery_workers):
    collection = make_collection("pipe-remove", 5)
    index_all(collection)
    wait_for(lambda: all_indexed(collection), what="indexing")
    d1, d2 = Document.objects.filter(collection=collection).order_by("external_id")[1:3]

    with transaction.atomic():
        queue_for_removal([d1.pk])
    wait_for(lambda: Document.objects.get(pk=d1.pk).status == Document.Status.REMOVED, what="removed")
    assert not [c for c in es_chunks(es, collection) if c["document_id"] == d1.pk]
    assert assert_index_exact(es, collection)  # the others untouched

    d2_pk = d2.pk
    d2.delete()
    wait_for(lambda: not [c for c in es_chunks(es, collection) if c["document_id"] == d2_pk],
             what="deleted document's chunks gone")
    assert assert_index_exact(es, collection)

    indices = list(IndexBuild.objects.filter(collection=collection).values_list("index_name", flat=True))
    alias = alias_name(collection.slug)
    collection.delete()
    wait_for(lambda: not es.indices.exists(index=",".join(indices), allow_no_indices=False,
                                           ignore_unavailable=False) and not es.indices.exists_alias(name=alias),
             what="collection indices dropped")


@pytest.mark.backend
def test_rebuild_index_command_swaps_alias_and_keeps_n(es, celery_workers):
    collection = make_collection("pipe-rebuild", 10, keep_old_indices=1)
    index_all(collection)
    wait_for(lambda: all_indexed(collection), what="indexing")
    first = IndexBuild.objects.get(collection=collection, status=IndexBuild.Status.LIVE)
    alias = alias_name(collection.slug)

    call_command("rebuild_index", collection.slug, "--index-options", "hnsw", "--poll", "0.2")
    second = IndexBuild.objects.get(collection=collection, status=IndexBuild.Status.LIVE)
    assert second.pk != first.pk and get_store().indices_behind(alias) == [second.index_name]
    assert second.index_options == "hnsw"
    embedding = es.indices.get_mapping(index=second.index_name)[second.index_name]["mappings"]["properties"]["embedding"]
    # float32 HNSW in each engine's words: Elasticsearch's index_options, OpenSearch's lucene
    # method without a quantising encoder.
    assert embedding.get("index_options", {}).get("type") == "hnsw" or (
        embedding["method"]["name"] == "hnsw" and "encoder" not in embedding["method"].get("parameters", {}))
    assert get_store().index_meta(second.index_name)["index_options"] == "hnsw"
    assert (second.total_documents, second.done_documents, second.failed_documents) == (10, 10, 0)
    assert second.done_chunks == sum(Document.objects.filter(collection=collection).values_list("chunk_count", flat=True))
    assert second.chunks_per_second > 0 and second.finished_at
    assert assert_index_exact(es, collection) == second.done_chunks
    first.refresh_from_db()
    assert first.status == IndexBuild.Status.RETIRED and not first.index_deleted
    assert es.indices.exists(index=first.index_name)  # kept: keep_old_indices=1

    call_command("rebuild_index", collection.slug, "--poll", "0.2")
    first.refresh_from_db()
    assert first.index_deleted and not es.indices.exists(index=first.index_name)
    assert len(IndexBuild.objects.filter(collection=collection, index_deleted=False)) == 2


def test_only_one_build_per_collection(celery_workers):
    collection = make_collection("pipe-one-build", 3)
    build = start_build(collection)
    with pytest.raises(BuildInProgress) as info:
        start_build(collection)
    assert info.value.build == build
    wait_for(lambda: IndexBuild.objects.get(pk=build.pk).status == IndexBuild.Status.LIVE, what="build live")
    start_build(collection)  # allowed again once the first is finished


def test_rebuild_index_rejects_bad_arguments(celery_workers):
    from django.core.management.base import CommandError

    make_collection("pipe-bad-args", 1)
    with pytest.raises(CommandError, match="no collection with slug 'nope'"):
        call_command("rebuild_index", "nope")
    with pytest.raises(CommandError, match="cannot load model '/no/such/model'"):
        call_command("rebuild_index", "pipe-bad-args", "--model", "/no/such/model")
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("rebuild_index", "pipe-bad-args", "--index-options", "flat_magic")
    assert not IndexBuild.objects.filter(collection__slug="pipe-bad-args").exists()


def test_unloadable_model_marks_documents_failed_with_the_error(celery_workers):
    collection = make_collection("pipe-bad-model", 3, embedding_model="/nonexistent/model-dir")
    index_all(collection)
    wait_for(lambda: statuses(collection) == {"failed": 3}, what=f"failed, now {statuses(collection)}")
    errors = set(Document.objects.filter(collection=collection).values_list("last_error", flat=True))
    assert len(errors) == 1 and "/nonexistent/model-dir" in errors.pop()


@pytest.mark.backend
def test_reconcile_requeues_missing_and_deletes_orphans(es, celery_workers):
    collection = make_collection("pipe-reconcile", 6)
    index_all(collection)
    wait_for(lambda: all_indexed(collection), what="indexing")
    alias = alias_name(collection.slug)
    victim = Document.objects.get(collection=collection, external_id="d002")
    es.delete(index=alias, id=f"{collection.slug}/d002/0", refresh=True)  # lost behind our back
    es.index(index=alias, id=f"{collection.slug}/ghost/0", refresh=True, body={
        "collection": collection.slug, "document_id": 999999, "external_id": "ghost", "text": "orphan",
        "chunk": 0, "start": 0, "end": 6, "content_hash": "x", "embedding": [384 ** -0.5] * 384,
    })
    lost = Document.objects.get(collection=collection, external_id="d003")
    Document.objects.filter(pk=lost.pk).update(status=Document.Status.QUEUED)  # its message never came

    result = subprocess.run(
        [sys.executable, "manage.py", "reconcile_index", collection.slug, "--older-than", "0"],
        cwd=ROOT, env=worker_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"{collection.slug}: 1 queued, 1 marked indexed, 1 orphaned" in result.stdout
    wait_for(lambda: all_indexed(collection), what="reconciled")
    assert assert_index_exact(es, collection)
    assert Document.objects.get(pk=victim.pk).status == Document.Status.INDEXED


def test_admin_rebuild_page_progress_and_model_change_offer(admin_client, es, celery_workers):
    from django.forms.models import model_to_dict

    from indexer.embedding import resolve_model_path

    collection = make_collection("pipe-admin", 4)
    index_all(collection)
    wait_for(lambda: all_indexed(collection), what="indexing")
    live = IndexBuild.objects.get(collection=collection, status=IndexBuild.Status.LIVE)

    # Changing the model in the collection admin offers the rebuild; the live index keeps its model.
    other_id = resolve_model_path(MODEL)  # the same weights under another id: a local directory
    data = {k: v for k, v in model_to_dict(collection).items() if v is not None}
    data["groups"] = []
    data["embedding_model"] = other_id
    response = admin_client.post(f"/admin/indexer/collection/{collection.pk}/change/", data, follow=True)
    assert response.status_code == 200
    page = response.content.decode()
    assert f"still serves {MODEL}" in page and "Rebuild it with" in page
    changelist = admin_client.get("/admin/indexer/indexbuild/").content.decode()
    assert f"Rebuild with {other_id}" in changelist and live.index_name in changelist

    rebuild_url = f"/admin/indexer/indexbuild/rebuild/{collection.pk}/"
    page = admin_client.get(rebuild_url + f"?model={other_id}").content.decode()
    assert live.index_name in page and f'value="{other_id}"' in page
    bad = admin_client.post(rebuild_url, {"model_id": "/no/such/model", "index_options": "hnsw"})
    assert bad.status_code == 200 and "cannot load model" in bad.content.decode()

    response = admin_client.post(rebuild_url, {"model_id": other_id, "index_options": "hnsw"})
    build = IndexBuild.objects.get(collection=collection, status__in=IndexBuild.IN_PROGRESS)
    assert response.status_code == 302 and response["Location"].endswith(f"/indexbuild/{build.pk}/change/")
    page = admin_client.get(response["Location"]).content.decode()
    # The page updates its progress in place (indexer/admin_build_progress.py), no reload.
    progress_url = reverse("admin:indexer_indexbuild_progress")
    assert "Progress" in page and 'http-equiv="refresh"' not in page and progress_url in page
    answer = admin_client.get(progress_url, {"id": [build.pk, live.pk]}).json()
    assert [b["id"] for b in answer["builds"]] == sorted([build.pk, live.pk])
    mine = next(b for b in answer["builds"] if b["id"] == build.pk)
    assert mine["total"] == 4 and 0 <= mine["done"] <= 4 and mine["columns"]["progress"].endswith("%)")
    assert admin_client.get(progress_url, {"id": "x"}).status_code == 400
    wait_for(lambda: IndexBuild.objects.get(pk=build.pk).status == IndexBuild.Status.LIVE, what="admin build")
    answer = admin_client.get(progress_url, {"id": build.pk}).json()
    assert answer["in_progress"] is False and answer["builds"][0]["done"] == 4
    assert answer["builds"][0]["columns"]["progress"] == "4/4 documents (100%)"
    page = admin_client.get(f"/admin/indexer/indexbuild/{build.pk}/change/").content.decode()
    assert "4/4 documents (100%)" in page and progress_url not in page
    assert assert_index_exact(es, collection, model_id=other_id)

    # The collection list action starts a rebuild too.
    response = admin_client.post("/admin/indexer/collection/", {
        "action": "rebuild_index_action", "_selected_action": [collection.pk]}, follow=True)
    assert "rebuilding into" in response.content.decode()
    wait_for(lambda: not IndexBuild.objects.filter(collection=collection, status__in=IndexBuild.IN_PROGRESS).exists(),
             what="action build")
