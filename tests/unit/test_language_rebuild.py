"""The migration that introduced languages: collections and builds from before it keep `none`
(the rebuild on a language change: tests/integration/test_language_rebuild.py)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_migration_gives_existing_collections_and_builds_language_none():
    """Collections and builds from before languages serve what their indices hold: `none`."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("indexer", "0002_index_builds")], [("indexer", "0003_language")]
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
        assert new_apps.get_model("indexer", "Collection").objects.get(pk=old.pk).language == "none"
        assert new_apps.get_model("indexer", "IndexBuild").objects.get(collection_id=old.pk).language == "none"
        assert new_apps.get_model("indexer", "Collection").objects.create(name="New", slug="new-col").language == "en"
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
