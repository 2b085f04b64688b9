"""manage.py demo_reranker: what `make run` does about the demo collection's reranker before any
training (the training itself is train_reranker's, tested in test_training.py here and in
tests/integration/)."""
from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from indexer.models import Collection
from relevance.management.commands import demo_reranker

pytestmark = pytest.mark.django_db


def run(capsys, **options) -> str:
    call_command("demo_reranker", poll=0.05, **options)
    return capsys.readouterr().out


def test_no_demo_collection_is_not_an_error(capsys):
    assert "no collection 'nothing-here'" in run(capsys, collection="nothing-here")


def test_a_collection_with_a_reranker_is_cached(capsys, tmp_path):
    Collection.objects.create(name="Demo", slug="demo-cached", reranker_model=str(tmp_path))
    assert f"demo-cached is reranked by {tmp_path} (cached)" in run(capsys, collection="demo-cached")


def test_without_judgments_it_says_what_to_do(capsys):
    Collection.objects.create(name="Demo", slug="demo-bare")
    with pytest.raises(CommandError, match="no judgments to train on"):
        run(capsys, collection="demo-bare")


def test_a_model_installed_by_an_earlier_start_is_found(tmp_path, settings):
    """After a database reset the model trained before is offered again (the newest one that
    was installed; refused ones are never offered)."""
    settings.BASE_DIR = tmp_path
    parent = tmp_path / "var" / "rerankers"
    for name, installed in [("demo-reranker-20260101-000000", "yes, as the reranker of demo"),
                            ("demo-reranker-20260201-000000", "yes, as the reranker of demo"),
                            ("demo-reranker-20260301-000000", "no: held-out nDCG@10 does not beat the first stage")]:
        (parent / name).mkdir(parents=True)
        (parent / name / "config.json").write_text("{}")
        (parent / name / "training.json").write_text(json.dumps({"installed": installed}))
    assert demo_reranker.trained_before("demo") == parent / "demo-reranker-20260201-000000"
    assert demo_reranker.trained_before("other") is None


def test_a_bad_poll_interval_is_refused():
    with pytest.raises(CommandError, match="--poll must be a positive number of seconds"):
        call_command("demo_reranker", poll=0)
