"""A rerank worker loads its cross-encoders before the first search needs them (reranker/warm_up.py).

Without the warm-up the first search after a worker starts (or after a collection gets a new
reranker) waits for the model to load, longer than RERANK_TIMEOUT on a CPU, and comes back
"not reranked". Each rerank task says whether it had to load its model (`loaded_now`).
"""
import shutil

import pytest

from indexer.models import Collection
from reranker.tasks import rerank, warm_up
from tests.support.searching import build_reranker
from tests.support.workers import Worker

# The worker reads the collections' rerankers from the database: committed rows.
pytestmark = pytest.mark.django_db(transaction=True)
QUEUE = "rerank-warm"


def test_a_starting_worker_loads_the_site_and_collection_rerankers(tmp_path):
    site_model = build_reranker()
    own_model = tmp_path / "collection-reranker"
    shutil.copytree(site_model, own_model)
    Collection.objects.create(name="Warm", slug="warm", reranker_model=str(own_model))
    worker = Worker(QUEUE, extra_env={"RERANKER_MODEL": site_model, "RERANK_QUEUE": QUEUE}).start()
    try:
        for model in (site_model, str(own_model)):
            result = rerank.apply_async(args=["telomerase", ["telomeres shorten"], model], queue=QUEUE).get(timeout=120)
            assert result["loaded_now"] is False, model
        # A model that no process has seen is loaded by the search itself, and says so.
        unseen = tmp_path / "unseen"
        shutil.copytree(site_model, unseen)
        result = rerank.apply_async(args=["telomerase", ["telomeres shorten"], str(unseen)], queue=QUEUE).get(timeout=120)
        assert result["loaded_now"] is True

        # A model installed while the worker runs (train_reranker sends this task).
        installed = tmp_path / "installed-later"
        shutil.copytree(site_model, installed)
        outcome = warm_up.apply_async(args=[[str(installed), "/nonexistent/reranker"]], queue=QUEUE).get(timeout=120)
        assert outcome[str(installed)] == "ok"
        assert "cannot load reranker '/nonexistent/reranker'" in outcome["/nonexistent/reranker"]
        result = rerank.apply_async(args=["telomerase", ["telomeres shorten"], str(installed)], queue=QUEUE).get(timeout=120)
        assert result["loaded_now"] is False
    finally:
        worker.stop()
    assert "warm-up: reranker" in worker.log_tail(400)


def test_an_embed_worker_loads_no_cross_encoder(tmp_path):
    worker = Worker("embed-warm", extra_env={"RERANKER_MODEL": build_reranker(), "RERANK_QUEUE": QUEUE}).start()
    worker.stop()
    assert "warm-up" not in worker.log_tail(400)
