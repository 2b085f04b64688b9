"""The automatic reranker run: a collection's first live build with enough documents queues one
pseudo-only train run; a later build, a small collection, one with a reranker, judgments or a
run in progress, or the setting at 0, queue none (and say why)."""
from __future__ import annotations

import pytest

from indexer.builds import build_live
from indexer.models import Collection, IndexBuild
from relevance.auto_reranker import why_not
from relevance.models import RerankerRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def collection():
    return Collection.objects.create(name="Mine", slug="mine")


def test_first_live_build_queues_one_pseudo_only_run(collection, settings, django_capture_on_commit_callbacks):
    settings.AUTO_RERANKER_MIN_DOCUMENTS = 500
    with django_capture_on_commit_callbacks() as callbacks:
        build_live.send(IndexBuild, collection_id=collection.pk, documents=800, first=True)
        # The same build reported twice (a retried task) never makes a second run.
        build_live.send(IndexBuild, collection_id=collection.pk, documents=800, first=True)
    run = RerankerRun.objects.get()
    assert (run.kind, run.status, run.parameters["pseudo_only"]) == ("train", "queued", True)
    assert run.parameters["pseudo_queries"] > 0 and len(callbacks) == 1
    assert why_not(collection, 800, True) == "a train run of it is queued or running"


def test_no_run_and_the_reason(collection, settings):
    settings.AUTO_RERANKER_MIN_DOCUMENTS = 500
    assert why_not(collection, 499, True) == "499 documents, fewer than AUTO_RERANKER_MIN_DOCUMENTS (500)"
    assert why_not(collection, 800, False) == "not the collection's first build"
    collection.reranker_model = "/models/x"
    assert why_not(collection, 800, True) == "it has a reranker already"
    settings.AUTO_RERANKER_MIN_DOCUMENTS = 0
    assert why_not(collection, 800, True) == "AUTO_RERANKER_MIN_DOCUMENTS is 0 (off)"
    build_live.send(IndexBuild, collection_id=collection.pk, documents=800, first=True)
    assert not RerankerRun.objects.exists()


class _Store:
    """The engine side of a finalize, answered from memory."""

    def resume_refresh(self, index):
        pass

    def point_alias(self, alias, index):
        self.alias = index

    def indices_behind(self, alias):
        return [getattr(self, "alias", "")]

    def delete_index(self, index):
        pass


def test_a_build_going_live_says_whether_it_is_the_first(collection, monkeypatch):
    from types import SimpleNamespace

    from django.utils import timezone

    from indexer import builds
    from indexer.models import Document

    store = _Store()
    monkeypatch.setattr(builds, "get_store", lambda: store)
    monkeypatch.setattr(builds, "check_index", lambda index, collection_id: SimpleNamespace(
        extra=[], missing=[], ok=True, expected_documents=1, index_chunks=2))
    Document.objects.create(collection=collection, external_id="a", title="t", text="x", content_hash="h",
                            status=Document.Status.INDEXED)
    sent = []
    receiver = lambda sender, signal, **kwargs: sent.append(kwargs)  # noqa: E731
    builds.build_live.connect(receiver)
    try:
        for number in (1, 2):
            build = IndexBuild.objects.create(collection=collection, index_name=f"idx-{number}", model_id="m",
                                              language="none", index_options="hnsw", dims=384,
                                              status=IndexBuild.Status.FINALIZING, progress_at=timezone.now())
            assert builds.finalize_build(build.pk).outcome == builds.Finalized.LIVE
    finally:
        builds.build_live.disconnect(receiver)
    assert sent == [{"collection_id": collection.pk, "documents": 1, "first": True},
                    {"collection_id": collection.pk, "documents": 1, "first": False}]
