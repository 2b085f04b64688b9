"""A language change is a rebuild: the admin offers it, the live index keeps its language (and
answers every search) until the new index is complete, then the alias swaps and searches are
analyzed in the new language. Real embed worker, Elasticsearch and the search API throughout."""
from __future__ import annotations

import threading
import time

import pytest
from django.forms.models import model_to_dict
from django.test import Client

from indexer.store import alias_name
from indexer.models import Collection, IndexBuild
from tests.support.indexing import all_indexed, assert_index_exact, index_all, make_collection, statuses, wait_for
from tests.support.searching import add_documents

pytestmark = pytest.mark.django_db(transaction=True)

QUERY = "study run horse"


def test_language_change_rebuilds_while_search_keeps_answering(es, celery_workers, admin_client):
    collection = make_collection("lang-swap", 30, language="none", visibility=Collection.Visibility.PUBLIC)
    add_documents(collection, [("horses", "Field notes", "Veterinarians studied running horses on a farm.", {})])
    index_all(collection)
    wait_for(lambda: all_indexed(collection), what="first index")
    alias = alias_name(collection.slug)
    es.indices.refresh(index=alias)
    old = IndexBuild.objects.get(collection=collection, status=IndexBuild.Status.LIVE)
    assert old.language == "none"

    # Saving another language offers the rebuild; the live index (and search) keeps `none`.
    data = {k: v for k, v in model_to_dict(collection).items() if v is not None}
    data.update(groups=[], language="en")
    page = admin_client.post(f"/admin/indexer/collection/{collection.pk}/change/", data, follow=True).content.decode()
    assert "still serves language none" in page and "Rebuild it with language en" in page
    assert "language=en" in page
    changelist = admin_client.get("/admin/indexer/indexbuild/").content.decode()
    assert "Rebuild with language en" in changelist
    collection.refresh_from_db()
    assert collection.language == "en"

    searches, failures = [], []  # (time, found "horses"), errors
    stop = threading.Event()

    def search_continuously():
        from django.db import connection

        client = Client()
        modes = ["keyword", "hybrid"]
        try:
            while not stop.is_set():
                mode = modes[len(searches) % 2]
                response = client.get("/api/search", {"q": QUERY, "mode": mode, "collection": collection.slug,
                                                      "rerank": "off", "k": 50})
                if response.status_code != 200:
                    failures.append(f"{mode}: HTTP {response.status_code} {response.content[:300]!r}")
                    continue
                body = response.json()
                ids = [r["external_id"] for r in body["results"] if r["scores"]["keyword_rank"]]
                if not ids:  # "Study <n> of ..." titles match under both languages
                    failures.append(f"{mode}: no keyword result")
                searches.append((time.monotonic(), "horses" in ids))
        finally:
            connection.close()

    searcher = threading.Thread(target=search_continuously, daemon=True)
    searcher.start()
    try:
        wait_for(lambda: len(searches) >= 3, what="searches before the rebuild")
        assert not any(found for _, found in searches)  # `none`: no stemming
        rebuild_url = f"/admin/indexer/indexbuild/rebuild/{collection.pk}/"
        page = admin_client.get(rebuild_url + "?language=en").content.decode()
        assert "keyword language <code>none</code>" in page and '<option value="en" selected>' in page
        bad = admin_client.post(rebuild_url, {"model_id": collection.embedding_model, "index_options": "hnsw",
                                              "language": "xx"})
        assert bad.status_code == 200 and "Select a valid choice" in bad.content.decode()
        started = time.monotonic()
        response = admin_client.post(rebuild_url, {"model_id": collection.embedding_model,
                                                   "index_options": collection.index_options, "language": "en"})
        assert response.status_code == 302
        build = IndexBuild.objects.get(collection=collection, status__in=IndexBuild.IN_PROGRESS)
        assert build.language == "en"
        wait_for(lambda: IndexBuild.objects.get(pk=build.pk).status in (IndexBuild.Status.LIVE, IndexBuild.Status.FAILED),
                 timeout=300, what=f"build, statuses {statuses(collection)}")
        swapped = time.monotonic()
        count = len(searches)
        wait_for(lambda: len(searches) >= count + 3, what="searches after the swap")
    finally:
        stop.set()
        searcher.join(60)
    build.refresh_from_db()
    assert build.status == IndexBuild.Status.LIVE, build.error
    assert failures == []
    during = [found for t, found in searches if started <= t < swapped]
    # The old index answered, in its language, while the new one filled.
    assert len(during) >= 2 and not during[0], (len(during), len(searches))
    assert searches[-1][1] and searches[-3][1]  # then the stems, from the new index
    old.refresh_from_db()
    assert old.status == IndexBuild.Status.RETIRED
    meta = es.indices.get_mapping(index=alias)[build.index_name]["mappings"]
    assert meta["_meta"]["language"] == "en" and "text_terms" in meta["properties"]
    collection.refresh_from_db()
    assert collection.language == "en"
    assert assert_index_exact(es, collection, index=build.index_name)
    # Nothing is left to offer.
    assert f"{collection.name}: the index serves" not in admin_client.get("/admin/indexer/indexbuild/").content.decode()


def test_rebuild_index_command_language(es, celery_workers, capsys):
    from django.core.management import call_command

    collection = Collection.objects.create(name="lang-cmd", slug="lang-cmd", language="en")
    add_documents(collection, [("a", "Notes", "我们研究医学和生物学", {}), ("b", "Notes", "医生学习新的手术技术", {})])
    index_all(collection)
    wait_for(lambda: all_indexed(collection), what="first index")
    call_command("rebuild_index", "lang-cmd", "--language", "zh", "--poll", "0.2")
    assert "language zh" in capsys.readouterr().out
    collection.refresh_from_db()
    assert collection.language == "zh"
    live = IndexBuild.objects.get(collection=collection, status=IndexBuild.Status.LIVE)
    assert live.language == "zh"
    es.indices.refresh(index=alias_name(collection.slug))
    from search.retrieval import first_stage

    hits = first_stage("医学", "keyword", [collection]).hits
    assert [h.external_id for h in hits] == ["a"]
