"""A collection whose live index is gone from the engine (deleted by hand, a cluster that lost its
data) makes the search fail loudly, naming what to do, instead of answering an empty page; a
collection with nothing indexed yet is simply empty; a rebuild brings the search back. Real
embed worker, engine and search API."""
from __future__ import annotations

import pytest
from django.core.management import call_command

from indexer.models import Collection, IndexBuild
from indexer.store import alias_name, get_store
from search.errors import INDEX_MISSING
from tests.support.indexing import all_indexed, index_all, make_collection, wait_for
from tests.support.searching import add_documents

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backend]

QUERY = "telomerase in stem cells"


def search(client, **params) -> tuple[int, dict]:
    response = client.get("/api/search", {"q": QUERY, "rerank": "off", **params})
    return response.status_code, response.json()


@pytest.mark.parametrize("mode", ["keyword", "semantic", "hybrid"])
def test_a_lost_index_is_an_error_and_a_rebuild_brings_it_back(es, celery_workers, client, caplog, mode):
    slug = f"lost-{mode}"
    lost = make_collection(slug, 0, visibility=Collection.Visibility.PUBLIC)
    add_documents(lost, [("t1", "Telomerase", "Stem cells keep telomerase active to renew themselves.", {}),
                         ("t2", "Insulin", "Beta cells release insulin when glucose rises.", {})])
    index_all(lost)
    wait_for(lambda: all_indexed(lost), what="first index")
    es.indices.refresh(index=alias_name(slug))
    status, body = search(client, mode=mode, collection=slug)
    assert status == 200 and body["results"][0]["external_id"] == "t1", body

    # Not yet indexed: an empty answer, no error (nothing was ever there to find).
    waiting = Collection.objects.create(name=f"waiting {mode}", slug=f"waiting-{mode}",
                                        visibility=Collection.Visibility.PUBLIC)
    add_documents(waiting, [("w1", "Telomerase", "Telomerase again, not indexed yet.", {})])
    status, body = search(client, mode=mode, collection=waiting.slug)
    assert status == 200 and body["results"] == [], body

    live = IndexBuild.objects.get(collection=lost, status=IndexBuild.Status.LIVE)
    get_store().drop_indices([live.index_name])
    for params in ({"collection": slug}, {}):  # that collection alone, and every visible one
        status, body = search(client, mode=mode, **params)
        assert status == 503 and INDEX_MISSING in body["error"], (params, body)
    assert any("rebuild" in r.getMessage() and alias_name(slug) in r.getMessage() for r in caplog.records)

    call_command("rebuild_index", slug, "--poll", "0.2")
    es.indices.refresh(index=alias_name(slug))
    status, body = search(client, mode=mode, collection=slug)
    assert status == 200 and body["results"][0]["external_id"] == "t1", body
