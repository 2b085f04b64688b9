"""AUTO_RERANKER_NEW_JUDGMENTS: a collection whose staff + implicit judgments grew by that many
since its last train run gets one train run (on both kinds, replacing the installed model only if
better), queued by the click-judgments task; never a second while one is queued or running; a run
left running by a dead worker is marked failed; 0 turns it off; and the install rule of such a run
keeps a better installed model."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from analytics.tasks import derive_click_judgments
from indexer.models import Collection, Document
from relevance import collection_training
from relevance.auto_reranker import after_new_judgments, check_settings, why_not_retrain
from relevance.models import ImplicitJudgment, Judgment, RerankerRun
from relevance.run_tasks import command_options, judgment_count
from reranker.training import TrainingResult, TrainingSettings

pytestmark = pytest.mark.django_db


@pytest.fixture
def collection():
    collection = Collection.objects.create(name="Mine", slug="mine", reranker_model="/models/installed")
    for i in range(4):
        document = Document(collection=collection, external_id=f"d{i}", title="", text=f"Text {i}")
        document.refresh_hash()
        document.save()
    return collection


def judge(collection, queries: range, implicit: bool = False) -> None:
    document = collection.documents.first()
    for i in queries:
        if implicit:
            ImplicitJudgment.objects.create(collection=collection, query=f"q{i}", document=document, grade=1, clicks=3,
                                            examinations=5.0, derived_at=timezone.now())
        else:
            Judgment.objects.create(collection=collection, query=f"q{i}", document=document, grade=1)


def test_growth_since_the_last_train_run_queues_one_run_and_never_two(collection, settings,
                                                                      django_capture_on_commit_callbacks):
    settings.AUTO_RERANKER_NEW_JUDGMENTS = 5
    judge(collection, range(3))
    last = RerankerRun.objects.create(collection=collection, kind="train", status="done", judgments=3)
    judge(collection, range(3, 6))             # 3 staff more
    judge(collection, range(10, 11), implicit=True)   # and 1 implicit: 4 new
    assert judgment_count(collection) == 7
    assert why_not_retrain(collection, 7) == (
        f"4 new judgments since its last train run (run #{last.pk}), fewer than AUTO_RERANKER_NEW_JUDGMENTS (5)")
    assert after_new_judgments() == []
    judge(collection, range(11, 12), implicit=True)   # 5 new
    with django_capture_on_commit_callbacks() as callbacks:
        (run,) = after_new_judgments()
        assert after_new_judgments() == []    # queued: no second run
    assert len(callbacks) == 1
    assert (run.trigger, run.status, run.judgments) == ("new_judgments", "queued", 8)
    assert run.parameters["judgments"] == "both" and run.parameters["replace_if_better"] is True
    assert command_options("train", collection.slug, run.parameters)["replace_if_better"] is True
    assert why_not_retrain(collection, 8) == f"0 new judgments since its last train run (run #{run.pk}), fewer than " \
                                             "AUTO_RERANKER_NEW_JUDGMENTS (5)"
    assert why_not_retrain(collection, 20) == "a train run of it is queued or running"


def test_the_click_judgments_task_queues_it(collection, settings, django_capture_on_commit_callbacks):
    settings.AUTO_RERANKER_NEW_JUDGMENTS = 2
    RerankerRun.objects.create(collection=collection, kind="train", status="failed", judgments=0)
    judge(collection, range(2))
    with django_capture_on_commit_callbacks():
        summary = derive_click_judgments.apply().get()
    run = RerankerRun.objects.get(trigger="new_judgments")
    assert summary.endswith(f"reranker runs queued for new judgments: #{run.pk} (mine)")


def test_where_no_count_starts_and_off(collection, settings):
    settings.AUTO_RERANKER_NEW_JUDGMENTS = 2
    judge(collection, range(5))
    # A reranker installed without a run (demo_reranker, the command): no count to start from.
    assert why_not_retrain(collection, 5) == ("no train run of it counted its judgments (its reranker came from "
                                              "elsewhere, e.g. demo_reranker)")
    collection.reranker_model = ""
    assert why_not_retrain(collection, 5) is None      # no reranker yet: counted from 0
    settings.AUTO_RERANKER_NEW_JUDGMENTS = 0
    assert why_not_retrain(collection, 5) == "AUTO_RERANKER_NEW_JUDGMENTS is 0 (off)" and after_new_judgments() == []
    settings.AUTO_RERANKER_NEW_JUDGMENTS = -1
    assert check_settings() == ["AUTO_RERANKER_NEW_JUDGMENTS must be a whole number, 0 (off) or more, not -1"]


def test_a_run_left_running_by_a_dead_worker_is_failed_and_no_longer_blocks(collection, settings):
    settings.AUTO_RERANKER_NEW_JUDGMENTS = 1
    settings.RERANKER_RUN_SOFT_TIME_LIMIT, settings.TASK_HARD_TIME_LIMIT_GRACE = 3600, 60
    judge(collection, range(2))
    alive = RerankerRun.objects.create(collection=collection, kind="train", status="running", judgments=0,
                                       started_at=timezone.now() - timedelta(seconds=3000))
    assert why_not_retrain(collection, 2) == "a train run of it is queued or running"
    RerankerRun.objects.filter(pk=alive.pk).update(started_at=timezone.now() - timedelta(seconds=3700))
    assert why_not_retrain(collection, 2) is None
    alive.refresh_from_db()
    assert alive.status == "failed" and alive.finished_at and alive.error.startswith("its worker died")


class _Model:
    max_seq_length = 64

    def save(self, path):
        pass


def _trained(final: float) -> TrainingResult:
    heldout = {"queries": 4, "rerank_top": 5, "first_stage": {"ndcg@10": 0.5}, "reranked": {"ndcg@10": final},
               "final": {"ndcg@10": final}, "fusion": {}, "kind": "judged"}
    return TrainingResult(model=_Model(), settings=TrainingSettings(), data_summary={}, loss_log=[], constant_loss=1.0,
                          heldout=heldout, seconds=1.0, device="cpu", steps=1)


@pytest.mark.parametrize("new, installed_figure, replaced", [(0.70, 0.75, False), (0.75, 0.75, False),
                                                             (0.80, 0.75, True), (0.80, None, True)])
def test_replace_if_better_keeps_an_installed_model_that_is_as_good(collection, settings, tmp_path, monkeypatch,
                                                                    new, installed_figure, replaced):
    """The training and the installed model's scoring are stood in for (their figures are what
    the rule reads; both are tested in test_training.py and test_pseudo_only.py)."""
    settings.RERANKER_RUNTIME = "torch"   # no OpenVINO export of the stand-in model
    monkeypatch.setattr(collection_training, "mine", lambda *args, **kwargs: object())
    monkeypatch.setattr(collection_training, "train", lambda *args, **kwargs: _trained(new))
    monkeypatch.setattr(collection_training, "installed_model_figure", lambda *args, **kwargs: installed_figure)
    monkeypatch.setattr(collection_training, "save", lambda result, directory, name, installed, weights: installed)
    monkeypatch.setattr(collection_training, "export_for_cpu", lambda directory, stdout: None)
    monkeypatch.setattr(collection_training, "send_warm_up", lambda directory, stdout: None)
    options = {**command_options("train", collection.slug, {"replace_if_better": True}), "output": str(tmp_path)}
    outcome = collection_training.train_collection(collection, options, stdout=type("Out", (), {"write": print})())
    collection.refresh_from_db()
    assert outcome.installed is replaced and (collection.reranker_model != "/models/installed") is replaced
    if not replaced:
        assert outcome.refusal.startswith("NOT INSTALLED: the installed reranker (/models/installed) is as good or "
                                          f"better on the same 4 held-out queries (nDCG@10 {installed_figure:.4f}")
