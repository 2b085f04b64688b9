"""Periodic work of the analytics app (celery beat: CELERY_BEAT_SCHEDULE in searchsite/settings.py)."""
from __future__ import annotations

import logging

from celery import shared_task

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
    """The log's clicks as implicit judgments (analytics/click_judgments.py)."""
    summary = derive_implicit_judgments().summary()
    logger.info("click judgments: %s", summary)
    return summary
