"""A collection whose automatic training installed nothing: the run records why, the collection
keeps it, and a search of it says "not reranked: <why>" instead of the generic reason; a staff
run or a collection with a model leaves no note, and installing a model clears it."""
from __future__ import annotations

import pytest
from django.urls import reverse

from indexer.builds import build_live
from indexer.models import Collection, Document, IndexBuild
from relevance.collection_training import install
from relevance.models import RerankerRun
from relevance.run_tasks import _finish, train_run
from search.rerank_client import plan_shares
from search.retrieval import Hit

pytestmark = pytest.mark.django_db


def hit(collection: str) -> Hit:
    return Hit(id=f"{collection}/d/0", collection=collection, document_id=1, external_id="d", title="", text="t",
               chunk=0, start=0, end=1, metadata={}, score=1.0)


@pytest.fixture
def files(settings):
    settings.RERANKER_MODEL = ""
    collection = Collection.objects.create(name="Files", slug="files")
    for i in range(60):
        doc = Document(collection=collection, external_id=f"f{i}", title=f"scan_{i:04d}.pdf", text=f"Scan {i}")
        doc.refresh_hash()
        doc.save()
    return collection


def test_an_automatic_run_that_installs_nothing_says_why_in_the_run_and_the_search(files, settings, admin_client,
                                                                                   django_capture_on_commit_callbacks):
    settings.AUTO_RERANKER_MIN_DOCUMENTS = 50
    with django_capture_on_commit_callbacks():  # the run is recorded; its task is run here, not queued
        build_live.send(IndexBuild, collection_id=files.pk, documents=60, first=True)
    run = RerankerRun.objects.get()
    assert run.trigger == RerankerRun.Trigger.FIRST_BUILD and run.judgments == 0
    train_run.apply(args=[run.pk])
    run.refresh_from_db()
    files.refresh_from_db()
    assert run.status == "failed" and "nothing trained, no reranker installed" in run.error
    assert files.reranker_note == f"its automatic training (run #{run.pk}) installed no reranker: {run.error}"
    assert plan_shares([hit("files")], {"files": files}) == ([], f"files: {files.reranker_note}")
    page = admin_client.get(reverse("admin:relevance_rerankerrun_change", args=[run.pk])).content.decode()
    assert "Automatic: the first build went live; 0 judgments then" in page
    assert '<p class="run-error" id="run-error">nothing trained, no reranker installed: of the 60 documents' in page

    install(files, "/models/trained-elsewhere")
    files.refresh_from_db()
    assert files.reranker_note == ""


def test_no_note_from_a_staff_run_or_where_a_model_is_installed(files):
    other = Collection.objects.create(name="Other", slug="other")
    staff = RerankerRun.objects.create(collection=files, kind="train", status="running")
    _finish(staff.pk, "failed", error="no judgments")
    files.refresh_from_db()
    assert files.reranker_note == ""
    assert plan_shares([hit("files"), hit("other")], {"files": files, "other": other}) == (
        [], "no reranker model configured")

    files.reranker_model = "/models/kept"
    files.save()
    automatic = RerankerRun.objects.create(collection=files, kind="train", status="running",
                                           trigger=RerankerRun.Trigger.NEW_JUDGMENTS)
    _finish(automatic.pk, "failed", error="NOT INSTALLED: no better than the installed model")
    files.refresh_from_db()
    assert files.reranker_note == ""


def test_a_run_that_dies_leaves_the_note_too(files):
    run = RerankerRun.objects.create(collection=files, kind="train", status="running",
                                     trigger=RerankerRun.Trigger.FIRST_BUILD)
    train_run.on_failure(MemoryError("killed"), "task-id", [run.pk], {}, None)
    run.refresh_from_db()
    files.refresh_from_db()
    assert run.status == "failed" and files.reranker_note.startswith(
        f"its automatic training (run #{run.pk}) installed no reranker: ") and run.error in files.reranker_note
