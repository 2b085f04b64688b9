"""Which bi-encoders an embed worker's pool process loads as it starts (indexer/warm_up.py); the
worker itself doing it: tests/integration/test_time_limits.py."""
from __future__ import annotations

import pytest
from django.conf import settings

from indexer.embedding import _load_embedding_model
from indexer.models import Collection, IndexBuild
from indexer.warm_up import embedding_models_in_use, warm_up_embedding_models

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_site_model_then_the_current_indices_and_collections_newest_first():
    old = Collection.objects.create(name="Old", slug="old", embedding_model="model-old")
    new = Collection.objects.create(name="New", slug="new", embedding_model="model-new")
    IndexBuild.objects.create(collection=old, index_name="old-1", model_id="model-of-old-live-index",
                              language="en", index_options="hnsw", status=IndexBuild.Status.LIVE)
    IndexBuild.objects.create(collection=new, index_name="new-0", model_id="model-retired",
                              language="en", index_options="hnsw", status=IndexBuild.Status.RETIRED)
    models = embedding_models_in_use()
    assert models[:4] == [settings.EMBEDDING_MODEL, "model-of-old-live-index", "model-new", "model-old"]
    assert "model-retired" not in models
    assert len(models) <= _load_embedding_model.cache_info().maxsize


def test_at_most_as_many_as_a_process_keeps_and_each_once():
    for i in range(8):
        Collection.objects.create(name=f"C{i}", slug=f"c{i}", embedding_model=f"model-{i % 3}")
    models = embedding_models_in_use()
    assert len(models) == len(set(models)) == min(4, _load_embedding_model.cache_info().maxsize)


def test_a_model_that_cannot_load_is_reported_and_the_others_still_load(tmp_path):
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    outcome = warm_up_embedding_models([str(broken), settings.EMBEDDING_MODEL])
    assert outcome[settings.EMBEDDING_MODEL] == "ok"
    assert outcome[str(broken)] != "ok" and str(broken) in outcome
