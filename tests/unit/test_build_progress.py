"""The index builds' progress fragment (indexer/admin_build_progress.py): the build list and page
poll it instead of reloading (a real build through it: tests/integration/test_pipeline.py)."""
import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from indexer.models import Collection, IndexBuild

pytestmark = pytest.mark.django_db


@pytest.fixture
def builds():
    collection = Collection.objects.create(name="Papers", slug="papers")
    live = IndexBuild.objects.create(collection=collection, index_name="papers-1", model_id="m", language="en",
                                     index_options="hnsw", status="live", total_documents=4, done_documents=4)
    running = IndexBuild.objects.create(collection=collection, index_name="papers-2", model_id="m", language="en",
                                        index_options="hnsw", total_documents=10, done_documents=3,
                                        failed_documents=1, done_chunks=7)
    return live, running


def test_pages_poll_the_fragment_while_a_build_runs_and_never_reload(admin_client, builds):
    live, running = builds
    url = reverse("admin:indexer_indexbuild_progress")
    for page_url in (reverse("admin:indexer_indexbuild_changelist"),
                     reverse("admin:indexer_indexbuild_change", args=[running.pk])):
        page = admin_client.get(page_url).content.decode()
        assert 'http-equiv="refresh"' not in page and url in page and "fetch(" in page
    answer = admin_client.get(url, {"id": [running.pk, live.pk, 999]}).json()
    assert answer["in_progress"] is True and [b["id"] for b in answer["builds"]] == [live.pk, running.pk]
    polled = answer["builds"][1]
    assert (polled["done"], polled["total"], polled["status"]) == (4, 10, "building")
    assert polled["columns"]["progress"] == "3/10 documents (40%)" and polled["columns"]["done_chunks"] == "7"
    assert polled["columns"]["status"] == "Building"
    assert admin_client.get(url, {"id": "one"}).status_code == 400

    IndexBuild.objects.filter(pk=running.pk).update(status="failed")
    assert admin_client.get(url, {"id": running.pk}).json()["in_progress"] is False
    for page_url in (reverse("admin:indexer_indexbuild_changelist"),
                     reverse("admin:indexer_indexbuild_change", args=[running.pk])):
        assert url not in admin_client.get(page_url).content.decode()  # nothing runs: no polling


def test_the_fragment_is_for_staff_only(client, builds):
    url = reverse("admin:indexer_indexbuild_progress")
    User.objects.create_user("reader", password="pw")
    client.login(username="reader", password="pw")
    response = client.get(url, {"id": builds[1].pk})
    assert response.status_code == 302 and "/admin/login/" in response.url
    User.objects.create_user("clerk", password="pw", is_staff=True)
    client.login(username="clerk", password="pw")
    assert client.get(url, {"id": builds[1].pk}).status_code == 403
