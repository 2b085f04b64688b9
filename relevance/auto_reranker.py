"""A reranker for every collection, trained in the background on the `train` queue (progress
on the admin's run page like any run):

- when a collection's first build goes live with at least AUTO_RERANKER_MIN_DOCUMENTS documents
  (0: never), a run trains one from the collection itself (`train_reranker --pseudo-only`, the
  machine's recipe) and installs it by the usual rule. Not for a collection that already has a
  reranker or judgments (staff train those: the admin's Train action, `demo_reranker` for the
  demo);
- when its judgments (staff + implicit) have grown by AUTO_RERANKER_NEW_JUDGMENTS (0: never)
  since its last train run, a run trains on both kinds and replaces the installed model only if
  it beats it on the same held-out queries (`--replace-if-better`). Checked after each derivation
  of click judgments (analytics/tasks.py, `manage.py click_judgments`).

Never two train runs of one collection at once; a run left `running` past any task's time limit
(its worker died) is marked failed first (relevance/run_tasks.py, fail_dead_runs).
"""
from __future__ import annotations

import logging

from django.conf import settings

from common.precision import pick_device
from indexer.models import Collection

from .collection_training import RECIPES
from .models import RerankerRun
from .run_tasks import RunRefused, fail_dead_runs, judgment_count, start_run

log = logging.getLogger(__name__)


def check_settings() -> list[str]:
    return [f"{name} must be a whole number, 0 (off) or more, not {getattr(settings, name)!r}"
            for name in ("AUTO_RERANKER_MIN_DOCUMENTS", "AUTO_RERANKER_NEW_JUDGMENTS")
            if not isinstance(getattr(settings, name), int) or getattr(settings, name) < 0]


def run_in_progress(collection: Collection) -> bool:
    """A train run of the collection is queued or running (after marking dead ones failed)."""
    fail_dead_runs(collection)
    return RerankerRun.objects.filter(collection=collection, kind=RerankerRun.Kind.TRAIN,
                                      status__in=(RerankerRun.Status.QUEUED, RerankerRun.Status.RUNNING)).exists()


def recipe() -> dict:
    """The machine's training settings (train_reranker options)."""
    return dict(RECIPES["cuda" if pick_device("auto") == "cuda" else "cpu"])


def why_not(collection: Collection, documents: int, first: bool) -> str | None:
    """Why no automatic run starts for this build; None: one does."""
    minimum = settings.AUTO_RERANKER_MIN_DOCUMENTS
    if minimum <= 0:
        return "AUTO_RERANKER_MIN_DOCUMENTS is 0 (off)"
    if not first:
        return "not the collection's first build"
    if documents < minimum:
        return f"{documents} documents, fewer than AUTO_RERANKER_MIN_DOCUMENTS ({minimum})"
    if collection.reranker_model:
        return "it has a reranker already"
    if collection.judgments.exists():
        return "it has judgments (train from them: the admin's Train action)"
    if run_in_progress(collection):
        return "a train run of it is queued or running"
    return None


def after_build(sender, collection_id: int, documents: int, first: bool, **kwargs) -> RerankerRun | None:
    """indexer.builds.build_live receiver."""
    collection = Collection.objects.filter(pk=collection_id).first()
    if collection is None:
        return None
    reason = why_not(collection, documents, first)
    if reason:
        log.info("no automatic reranker run for %s: %s", collection.slug, reason)
        return None
    try:
        run = start_run(collection, RerankerRun.Kind.TRAIN, {**recipe(), "pseudo_only": True},
                        trigger=RerankerRun.Trigger.FIRST_BUILD)
    except RunRefused as exc:
        log.error("automatic reranker run for %s refused: %s", collection.slug, exc)
        return None
    log.info("automatic reranker run #%s queued for %s (%d documents, pseudo-only)", run.pk, collection.slug, documents)
    return run


def why_not_retrain(collection: Collection, judgments: int) -> str | None:
    """Why no run for new judgments starts, the collection having `judgments` (staff + implicit)
    now; None: one does. The growth counts from the last train run (what it counted when
    queued); a collection never trained by a run counts from 0 only while it has no reranker (one
    installed otherwise, e.g. by `demo_reranker`, has no count to start from)."""
    needed = settings.AUTO_RERANKER_NEW_JUDGMENTS
    if needed <= 0:
        return "AUTO_RERANKER_NEW_JUDGMENTS is 0 (off)"
    last = collection.reranker_runs.filter(kind=RerankerRun.Kind.TRAIN, judgments__isnull=False) \
        .order_by("-created_at", "-pk").first()
    if last is None and collection.reranker_model.strip():
        return "no train run of it counted its judgments (its reranker came from elsewhere, e.g. demo_reranker)"
    since = f"run #{last.pk}" if last else "it has none"
    grown = judgments - (last.judgments if last else 0)
    if grown < needed:
        return f"{grown} new judgments since its last train run ({since}), fewer than AUTO_RERANKER_NEW_JUDGMENTS ({needed})"
    if run_in_progress(collection):
        return "a train run of it is queued or running"
    return None


def after_new_judgments() -> list[RerankerRun]:
    """Queue a train run for each collection whose judgments grew by AUTO_RERANKER_NEW_JUDGMENTS
    (staff and implicit judgments trained on; the installed model replaced only by a better one)."""
    queued = []
    if settings.AUTO_RERANKER_NEW_JUDGMENTS <= 0:
        return queued
    for collection in Collection.objects.order_by("pk"):
        judgments = judgment_count(collection)
        reason = why_not_retrain(collection, judgments)
        if reason:
            log.info("no reranker run for new judgments of %s: %s", collection.slug, reason)
            continue
        try:
            run = start_run(collection, RerankerRun.Kind.TRAIN,
                            {**recipe(), "judgments": "both", "replace_if_better": True},
                            trigger=RerankerRun.Trigger.NEW_JUDGMENTS)
        except RunRefused as exc:
            log.error("reranker run for new judgments of %s refused: %s", collection.slug, exc)
            continue
        log.info("reranker run #%s queued for %s: %d judgments", run.pk, collection.slug, judgments)
        queued.append(run)
    return queued
