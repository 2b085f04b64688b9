"""The parts of builds and reconcile that decide the next step from the database alone (the index
side, through a real Elasticsearch and workers: tests/integration/test_pipeline.py,
test_failures.py)."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from indexer import builds, reconcile
from indexer.models import Collection, Document, IndexBuild
from indexer.tasks import task_report

pytestmark = pytest.mark.django_db

Status = Document.Status


@pytest.fixture
def collection():
    return Collection.objects.create(name="Builds", slug="builds")


def add(collection, external_id: str, status: str, **fields) -> Document:
    return Document.objects.create(collection=collection, external_id=external_id, title="t", text="x",
                                   content_hash=f"hash-{external_id}", status=status, **fields)


def build_of(collection, status, dims=384, **fields) -> IndexBuild:
    return IndexBuild.objects.create(collection=collection, index_name=f"idx-{collection.slug}-{status}",
                                     model_id="m", language="none", index_options="hnsw", status=status,
                                     dims=dims, progress_at=timezone.now(), **fields)


def test_the_last_batch_hands_the_build_to_finalize_exactly_once(collection):
    add(collection, "a", Status.INDEXED, chunk_count=2)
    second = add(collection, "b", Status.QUEUED)
    build = build_of(collection, IndexBuild.Status.BUILDING)
    assert builds.after_batch(collection.pk) is None  # one document still to do
    build.refresh_from_db()
    assert (build.total_documents, build.done_documents, build.done_chunks) == (2, 1, 2)

    Document.objects.filter(pk=second.pk).update(status=Status.FAILED)
    assert builds.after_batch(collection.pk) == build.pk
    assert builds.after_batch(collection.pk) is None  # already finalizing: nobody else gets it
    build.refresh_from_db()
    assert build.status == IndexBuild.Status.FINALIZING and build.failed_documents == 1


def test_finalize_results_have_one_shape(collection):
    add(collection, "a", Status.INDEXED)
    add(collection, "b", Status.FAILED, last_error="boom")
    building = build_of(collection, IndexBuild.Status.BUILDING)

    skipped = builds.finalize_build(building.pk)  # a redelivered message: not finalizing
    assert skipped.outcome == builds.Finalized.SKIPPED and skipped.error == "" and skipped.redo_ids == []

    IndexBuild.objects.filter(pk=building.pk).update(status=IndexBuild.Status.FINALIZING)
    failed = builds.finalize_build(building.pk)
    assert failed.outcome == builds.Finalized.FAILED
    assert failed.error.startswith("1 documents failed to index")
    building.refresh_from_db()
    assert building.status == IndexBuild.Status.FAILED and building.error == failed.error
    # What the task returns: JSON, the same keys whatever the outcome, no id lists.
    for result in (skipped, failed):
        report = json.loads(json.dumps(task_report(result)))
        assert set(report) == {"build_id", "collection_id", "outcome", "error", "documents", "chunks",
                               "deleted_indices", "redo"}
    assert task_report(failed)["outcome"] == "failed"


def test_reconcile_plan_without_an_index_queues_what_it_should(collection):
    old = timezone.now() - timedelta(hours=2)
    indexed = add(collection, "indexed", Status.INDEXED)
    pending = add(collection, "pending", Status.PENDING)
    failed = add(collection, "failed", Status.FAILED, last_error="boom")
    add(collection, "removed", Status.REMOVED)
    waiting = add(collection, "waiting", Status.QUEUED)  # queued a moment ago: its message may still come
    lost = add(collection, "lost", Status.QUEUED)
    Document.objects.filter(pk=lost.pk).update(updated_at=old)

    plan = reconcile.plan_collection(collection.pk, older_than=3600)
    assert plan.target_index is None and plan.build_id is None and plan.resend is None
    assert sorted(plan.requeue) == sorted([indexed.pk, pending.pk, lost.pk])
    assert plan.already_indexed == [] and plan.orphans == []
    assert waiting.pk not in plan.requeue and failed.pk not in plan.requeue

    retry = reconcile.plan_collection(collection.pk, older_than=3600, retry_failed=True)
    assert failed.pk in retry.requeue
    assert reconcile.report(retry) == reconcile.ReconcileReport(
        collection="builds", queued=4, marked_indexed=0, orphans=0, orphans_deleted=0, build=None)


def test_reconcile_plan_resends_the_lost_prepare_of_a_build(collection):
    add(collection, "a", Status.QUEUED)
    build = build_of(collection, IndexBuild.Status.BUILDING, dims=None)
    IndexBuild.objects.filter(pk=build.pk).update(progress_at=timezone.now() - timedelta(hours=2))

    plan = reconcile.plan_collection(collection.pk, older_than=3600)
    assert (plan.build_id, plan.build_index, plan.resend) == (build.pk, build.index_name, reconcile.BuildStep.PREPARE)
    assert plan.requeue == []  # preparing the build queues every document itself

    IndexBuild.objects.filter(pk=build.pk).update(progress_at=timezone.now())
    assert reconcile.plan_collection(collection.pk, older_than=3600).resend is None  # it may still come
