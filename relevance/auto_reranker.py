"""A reranker for every collection: when a collection's first build goes live with at least
AUTO_RERANKER_MIN_DOCUMENTS documents (0: never), a train run on the `train` queue trains one
from the collection itself (`train_reranker --pseudo-only`, the machine's recipe) and installs it
by the usual rule; its progress is on the admin's run page like any run.

Not for a collection that already has a reranker, judgments (staff train those: the admin's Train
action, `demo_reranker` for the demo) or a train run queued or running (never two at once).
"""
from __future__ import annotations

import logging

from django.conf import settings

from common.precision import pick_device
from indexer.models import Collection

from .collection_training import RECIPES
from .models import RerankerRun
from .run_tasks import RunRefused, start_run

log = logging.getLogger(__name__)


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
    if RerankerRun.objects.filter(collection=collection, kind=RerankerRun.Kind.TRAIN,
                                  status__in=(RerankerRun.Status.QUEUED, RerankerRun.Status.RUNNING)).exists():
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
    recipe = RECIPES["cuda" if pick_device("auto") == "cuda" else "cpu"]
    try:
        run = start_run(collection, RerankerRun.Kind.TRAIN, {**recipe, "pseudo_only": True},
                        trigger=RerankerRun.Trigger.FIRST_BUILD)
    except RunRefused as exc:
        log.error("automatic reranker run for %s refused: %s", collection.slug, exc)
        return None
    log.info("automatic reranker run #%s queued for %s (%d documents, pseudo-only)", run.pk, collection.slug, documents)
    return run
