"""Reranker work from the admin, end to end: a staff member starts evaluate and train runs with
the Django test client, a real worker of the `train` queue runs them (relevance/run_tasks.py),
the progress fragment answers while they run, and the run page shows the results; a trained
model is installed and rolled back from the rerankers page. Pages without a worker:
tests/unit/test_admin_runs.py."""
from __future__ import annotations

import json
import shutil
import time

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from indexer.models import Collection, Document
from relevance.models import Judgment, RerankerRun
from tests.integration.test_training import TOY_QUERIES
from tests.support.searching import SCIENCE, add_documents, build_reranker, drop_collections, index_now
from tests.support.workers import RUN_ID

pytestmark = pytest.mark.django_db(transaction=True)

# Unique per test run: trained models go to train_reranker's default folder, listed by slug.
SLUG = f"admin-toy-{RUN_ID}"


@pytest.fixture
def collection(es):
    collection = Collection.objects.create(name="Admin toy", slug=SLUG)
    add_documents(collection, [(f"s{i}", title, text, {}) for i, (title, text) in enumerate(SCIENCE)])
    index_now(es, collection)
    docs = {d.external_id: d for d in Document.objects.filter(collection=collection)}
    for query, relevant in TOY_QUERIES.items():
        for ext in relevant:
            Judgment.objects.create(collection=collection, query=query, document=docs[ext], grade=1)
    yield collection
    from relevance.collection_training import models_dir

    for directory in models_dir().glob(f"{SLUG}-reranker-*"):
        shutil.rmtree(directory)
    drop_collections(es, collection)


@pytest.fixture
def staff_client(client):
    """A staff member who may change collections and see runs (not a superuser)."""
    user = User.objects.create_user("curator", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=[
        "view_collection", "change_collection", "view_rerankerrun"]))
    client.login(username="curator", password="pw")
    return client


def wait_for_run(client, run_id: int, timeout: float = 900) -> list[dict]:
    """Poll the run's progress fragment, as its page does, until it ends; every answer."""
    url = reverse("admin:relevance_rerankerrun_progress", args=[run_id])
    answers = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(url)
        assert response.status_code == 200 and response["Content-Type"] == "application/json"
        answers.append(response.json())
        if answers[-1]["finished"]:
            return answers
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not end in {timeout} s: {answers[-1]}")


def test_evaluate_run_from_the_admin_equals_the_evaluate_function(train_worker, collection, staff_client):
    from relevance.evaluation import evaluate_collection
    from relevance.run_tasks import command_options

    url = reverse("admin:relevance_rerankerrun_evaluate", args=[collection.pk])
    response = staff_client.post(url, {"modes": ["keyword", "hybrid"], "rerank_top": "5", "k": 3, "recall_k": 5})
    assert response.status_code == 302, response.content.decode()[-2000:]
    run = RerankerRun.objects.get(collection=collection)
    answers = wait_for_run(staff_client, run.pk)
    assert {"done", "total", "text", "status"} <= set(answers[0])
    run.refresh_from_db()
    assert run.status == "done", (run.error, train_worker.log_tail())
    assert run.started_at and run.finished_at and run.task_id
    # Its last stage (the hybrid mode) went through every judged query.
    assert (run.progress_done, run.progress_total) == (len(TOY_QUERIES), len(TOY_QUERIES))
    assert run.progress_text.startswith("hybrid: ")

    # The same input through the function `manage.py evaluate` runs, here.
    expected = evaluate_collection(collection, command_options("evaluate", SLUG, run.parameters))
    shutil.rmtree(expected.output)
    shutil.rmtree(run.result["output"])
    report = run.result["report"]
    assert report["queries"] == expected.report["queries"] == len(TOY_QUERIES)
    assert set(report["results"]) == {"keyword", "hybrid"}
    for mode, by_run in expected.report["results"].items():
        assert set(report["results"][mode]) == set(by_run) == {"first stage"}
        assert report["results"][mode]["first stage"]["mean"] == by_run["first stage"]["mean"]
    assert run.result["table"] == expected.table and expected.table in run.log

    page = staff_client.get(reverse("admin:relevance_rerankerrun_change", args=[run.pk])).content.decode()
    hybrid_ndcg = expected.report["results"]["hybrid"]["first stage"]["mean"]["ndcg@3"]
    assert 'id="metrics-table"' in page and f"{hybrid_ndcg:.4f}" in page and "ndcg@3" in page
    assert 'src="data:image/png;base64,' in page and "fetch(" not in page


def test_train_run_from_the_admin_and_install_and_roll_back(train_worker, collection, staff_client, tmp_path):
    url = reverse("admin:relevance_rerankerrun_train", args=[collection.pk])
    form = staff_client.get(url).context["form"]
    # An unticked box (None) is left out, as a browser leaves it out.
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    # Tiny, as tests/integration/test_training.py trains it.
    data.update(max_steps=3, epochs=1, max_length=64, negatives=3, heldout=0.34, rerank_top=5, device="cpu",
                pseudo_queries=2, no_install="")
    response = staff_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[-2000:]
    run = RerankerRun.objects.get(collection=collection, kind="train")
    answers = wait_for_run(staff_client, run.pk)
    run.refresh_from_db()
    stages = {answer["text"].split(":")[0] for answer in answers if answer["text"]} | {run.progress_text.split(":")[0]}
    assert stages & {"mining judged queries", "training", "held-out scoring"}, stages
    result = run.result
    assert result is not None, (run.error, train_worker.log_tail())
    training = result["training"]
    beats = training["heldout"]["final"]["ndcg@10"] > training["heldout"]["first_stage"]["ndcg@10"]
    collection.refresh_from_db()
    # The install rule decides, deterministically for these figures (train_reranker's own rule).
    if beats:
        assert run.status == "done" and run.error == "" and result["installed"]
        assert collection.reranker_model == result["directory"]
    else:
        assert run.status == "failed" and run.error.startswith("NOT INSTALLED") and not result["installed"]
        assert collection.reranker_model == ""
    assert "constant predictor" in run.log
    page = staff_client.get(reverse("admin:relevance_rerankerrun_change", args=[run.pk])).content.decode()
    assert 'id="model-card"' in page and f"# {result['name']}: cross-encoder reranker" in page
    assert 'id="heldout-table"' in page and 'src="data:image/png;base64,' in page

    # Install and roll back, on two models the install rule accepts (the tests' cross-encoder,
    # with held-out figures that beat the first stage), through the rerankers page.
    from relevance.collection_training import models_dir

    older, newer = (models_dir() / f"{SLUG}-reranker-2000010{i}-000000" for i in (1, 2))
    for directory, final in ((older, 0.6), (newer, 0.7)):
        shutil.copytree(build_reranker(), directory)
        (directory / "training.json").write_text(json.dumps(
            {"heldout": {"queries": 2, "first_stage": {"ndcg@10": 0.5}, "final": {"ndcg@10": final},
                         "reranked": {"ndcg@10": final}}}))
    install = reverse("admin:relevance_rerankerrun_install", args=[collection.pk])
    rollback = reverse("admin:relevance_rerankerrun_rollback", args=[collection.pk])
    listing = staff_client.get(reverse("admin:relevance_rerankerrun_rerankers", args=[collection.pk])).content.decode()
    assert older.name in listing and newer.name in listing and result["name"] in listing
    for directory in (older, newer):
        response = staff_client.post(install, {"name": directory.name, "confirm": "yes"}, follow=True)
        assert "installed " in response.content.decode()
        collection.refresh_from_db()
        assert collection.reranker_model == str(directory.resolve())
    assert b'name="confirm"' in staff_client.get(rollback).content  # asks first
    collection.refresh_from_db()
    assert collection.reranker_model == str(newer.resolve())
    staff_client.post(rollback, {"confirm": "yes"})
    collection.refresh_from_db()
    assert collection.reranker_model == str(older.resolve())

    # A model the rule refuses is not installed, with the reason.
    (newer / "training.json").write_text(json.dumps(
        {"heldout": {"queries": 2, "first_stage": {"ndcg@10": 0.5}, "final": {"ndcg@10": 0.5},
                     "reranked": {"ndcg@10": 0.5}}}))
    response = staff_client.post(install, {"name": newer.name, "confirm": "yes"}, follow=True)
    assert "NOT INSTALLED" in response.content.decode()
    collection.refresh_from_db()
    assert collection.reranker_model == str(older.resolve())
