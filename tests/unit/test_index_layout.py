"""Shards and replicas per collection (issue 15): defaults from settings, limits, kept by each
build from its start, the rebuild offer when they change, the migration, and a client for several
nodes. The layout reaching Elasticsearch and surviving a stopped node: tests/integration/test_cluster.py."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from indexer import builds
from indexer.admin_builds import build_differences, collections_with_changed_model
from indexer.models import MAX_REPLICAS, MAX_SHARDS, Collection, IndexBuild, check_layout
from tests.support.workers import ROOT

pytestmark = pytest.mark.django_db


def test_a_new_collection_takes_the_settings_layout(settings):
    assert (Collection.objects.create(name="A", slug="a").shards,
            Collection.objects.get(slug="a").replicas) == (settings.INDEX_SHARDS, settings.INDEX_REPLICAS) == (1, 0)
    settings.INDEX_SHARDS, settings.INDEX_REPLICAS = 3, 1
    collection = Collection.objects.create(name="B", slug="b")
    collection.refresh_from_db()
    assert (collection.shards, collection.replicas) == (3, 1)


@pytest.mark.parametrize("shards, replicas, field", [(0, 0, "shards"), (MAX_SHARDS + 1, 0, "shards"),
                                                     (1, MAX_REPLICAS + 1, "replicas")])
def test_the_admin_form_refuses_a_layout_out_of_range(shards, replicas, field):
    collection = Collection(name="C", slug="c", shards=shards, replicas=replicas)
    with pytest.raises(ValidationError) as raised:
        collection.full_clean()
    assert list(raised.value.message_dict) == [field]


@pytest.mark.parametrize("shards, replicas, message", [
    (0, 0, "shards must be a whole number from 1 to 64, not 0"),
    (1, -1, "replicas must be a whole number from 0 to 8, not -1"),
    (1, "1", "replicas must be a whole number from 0 to 8, not '1'"),
])
def test_check_layout_names_the_bad_value(shards, replicas, message):
    with pytest.raises(ValueError, match=message):
        check_layout(shards, replicas)


@pytest.mark.parametrize("name, value, message", [
    ("INDEX_SHARDS", "0", "INDEX_SHARDS must be a whole number from 1 to 64, not 0"),
    ("INDEX_REPLICAS", "9", "INDEX_REPLICAS must be a whole number from 0 to 8, not 9"),
])
def test_a_bad_default_stops_every_process_at_start(name, value, message):
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=dict(os.environ, **{name: value}),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr


def test_a_build_keeps_the_layout_it_started_with():
    collection = Collection.objects.create(name="D", slug="d", shards=2, replicas=1)
    build = builds.start_build(collection)
    Collection.objects.filter(pk=collection.pk).update(shards=5, replicas=0)
    build.refresh_from_db()
    assert (build.shards, build.replicas) == (2, 1)
    build.status = IndexBuild.Status.FAILED
    build.save()
    other = builds.start_build(collection, shards=4, replicas=2)
    assert (other.shards, other.replicas) == (4, 2)
    with pytest.raises(ValueError, match="replicas must be a whole number from 0 to 8, not 9"):
        builds.start_build(collection, replicas=9)


def test_a_layout_change_offers_a_rebuild(admin_client):
    collection = Collection.objects.create(name="E", slug="e", shards=1, replicas=0, language="none")
    live = IndexBuild.objects.create(collection=collection, index_name="x-e-1", model_id=collection.embedding_model,
                                     language="none", index_options="hnsw", status="live", shards=1, replicas=0)
    assert build_differences(live, collection) == ("", "")
    collection.replicas = 1
    collection.save()
    assert build_differences(live, collection) == ("1 shards, 0 replicas", "1 shards, 1 replicas")
    [offer] = collections_with_changed_model()
    assert offer["url"].endswith(f"/rebuild/{collection.pk}/?model={collection.embedding_model.replace('/', '%2F')}"
                                 "&language=none&shards=1&replicas=1")
    page = admin_client.get(offer["url"]).content.decode()
    assert 'name="replicas" value="1"' in page and "1 shards, 0 replicas" in page
    bad = admin_client.post(reverse("admin:indexer_indexbuild_rebuild", args=[collection.pk]),
                            {"model_id": collection.embedding_model, "index_options": "hnsw", "shards": "0"})
    assert bad.status_code == 200 and "Ensure this value is greater than or equal to 1." in bad.content.decode()
    assert not IndexBuild.objects.filter(status="building").exists()


def test_elasticsearch_url_may_name_several_nodes(settings):
    from indexer.store import get_client

    settings.ELASTICSEARCH_URL = "http://127.0.0.1:9211, http://127.0.0.1:9212,http://127.0.0.1:9213"
    get_client.cache_clear()
    try:
        nodes = get_client().transport.node_pool.all()
        assert sorted(node.config.port for node in nodes) == [9211, 9212, 9213]
        settings.ELASTICSEARCH_URL = " , "
        get_client.cache_clear()
        with pytest.raises(ValueError, match="ELASTICSEARCH_URL names no node: ' , '"):
            get_client()
    finally:
        get_client.cache_clear()


@pytest.mark.django_db(transaction=True)
def test_migration_gives_existing_collections_and_builds_one_shard_no_replica(settings):
    """What existing indices have, whatever the defaults for new collections say."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    settings.INDEX_SHARDS, settings.INDEX_REPLICAS = 2, 1
    before, after = [("indexer", "0006_collection_index_options_default_from_the_engine")], [("indexer", "0007_index_layout")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old_apps = executor.loader.project_state(before).apps
        old = old_apps.get_model("indexer", "Collection").objects.create(name="Old", slug="old-col")
        old_apps.get_model("indexer", "IndexBuild").objects.create(
            collection_id=old.pk, index_name="x-old-col-1", model_id="m", index_options="hnsw", status="live")
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        new_apps = executor.loader.project_state(after).apps
        migrated = new_apps.get_model("indexer", "Collection").objects.get(pk=old.pk)
        assert (migrated.shards, migrated.replicas) == (1, 0)
        build = new_apps.get_model("indexer", "IndexBuild").objects.get(collection_id=old.pk)
        assert (build.shards, build.replicas) == (1, 0)
        new = new_apps.get_model("indexer", "Collection").objects.create(name="New", slug="new-col")
        assert (new.shards, new.replicas) == (2, 1)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
