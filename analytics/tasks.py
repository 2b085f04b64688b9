"""Periodic work of the analytics app (celery beat: CELERY_BEAT_SCHEDULE in searchsite/settings.py)."""
from __future__ import annotations

import logging

from celery import shared_task

from relevance.auto_reranker import after_new_judgments

from .click_judgments import derive_implicit_judgments
from .search_log import prune

logger = logging.getLogger(__name__)


@shared_task(name="analytics.tasks.prune_search_log")
def prune_search_log() -> int:
    """Delete searches and clicks older than SEARCH_LOG_DAYS."""
    deleted = prune()
    logger.info("search log: %d searches older than the retention deleted", deleted)
    return deleted


@shared_task(name="analytics.tasks.derive_click_judgments")
def derive_click_judgments() -> str:
    """The log's clicks as implicit judgments (analytics/click_judgments.py); then a reranker run
    for each collection whose judgments grew by AUTO_RERANKER_NEW_JUDGMENTS (relevance/auto_reranker.py)."""
    summary = derive_implicit_judgments().summary()
    logger.info("click judgments: %s", summary)
    runs = after_new_judgments()
    if runs:
        summary += "; reranker runs queued for new judgments: " + ", ".join(
            f"#{run.pk} ({run.collection.slug})" for run in runs)
    return summary
