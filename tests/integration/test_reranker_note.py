"""Through the real stack (Elasticsearch, the search page and API): a collection without titles
whose automatic training run installs nothing; its searches say why they are not reranked."""
from __future__ import annotations

import pytest

from indexer.builds import build_live
from indexer.models import Collection, IndexBuild
from relevance.models import RerankerRun
from relevance.run_tasks import train_run
from tests.support.searching import SCIENCE, add_documents, drop_collections, index_now

pytestmark = pytest.mark.django_db


def test_search_says_why_the_automatic_training_installed_nothing(es, client, settings,
                                                                 django_capture_on_commit_callbacks):
    settings.RERANKER_MODEL = ""
    settings.AUTO_RERANKER_MIN_DOCUMENTS = 1
    collection = Collection.objects.create(name="No titles", slug="note-untitled",
                                           visibility=Collection.Visibility.PUBLIC)
    add_documents(collection, [(f"u{i}", "", text, {}) for i, (_, text) in enumerate(SCIENCE)])
    index_now(es, collection)
    try:
        with django_capture_on_commit_callbacks():  # recorded; its task run here rather than queued
            build_live.send(IndexBuild, collection_id=collection.pk, documents=len(SCIENCE), first=True)
        run = RerankerRun.objects.get(collection=collection)
        train_run.apply(args=[run.pk])
        run.refresh_from_db()
        assert run.status == "failed" and run.error.startswith(
            f"nothing trained, no reranker installed: of the {len(SCIENCE)} documents of 'note-untitled', 0 gave a "
            "title that reads like a query")
        reason = f"note-untitled: its automatic training (run #{run.pk}) installed no reranker: {run.error}"

        body = client.get("/api/search", {"q": "telomerase in stem cells", "collection": "note-untitled"}).json()
        assert body["results"] and body["not_reranked"] == reason
        page = client.get("/", {"q": "telomerase in stem cells", "collection": "note-untitled"}).content.decode()
        assert "<strong>not reranked:</strong> note-untitled: its automatic training" in page
    finally:
        drop_collections(es, collection)
