"""Time limits per task kind (settings.TASK_TIME_LIMIT_KINDS -> CELERY_TASK_ANNOTATIONS) and what a
task that hits one leaves behind, without a worker (through a real worker:
tests/integration/test_time_limits.py)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings

from indexer.models import Document
from indexer.tasks import error_text, index_documents, prepare_build
from searchsite.celery import app
from tests.support.indexing import make_collection
from tests.support.workers import ROOT

# Tasks so short that a limit would only add noise: a health round trip.
UNLIMITED = {"indexer.tasks.ping", "reranker.tasks.ping"}


def test_every_task_has_the_limits_of_its_kind():
    app.loader.import_default_modules()  # what a worker registers
    registered = {name for name in app.tasks if not name.startswith("celery.")}
    named = {task for _, tasks in settings.TASK_TIME_LIMIT_KINDS.values() for task in tasks}
    assert named <= registered, f"limits for tasks that do not exist (renamed?): {named - registered}"
    assert registered - named == UNLIMITED, f"tasks without a time limit: {registered - named - UNLIMITED}"
    grace = settings.TASK_HARD_TIME_LIMIT_GRACE
    for soft, tasks in settings.TASK_TIME_LIMIT_KINDS.values():
        for name in tasks:
            assert (app.tasks[name].soft_time_limit, app.tasks[name].time_limit) == (soft, soft + grace)
    assert index_documents.soft_time_limit == settings.INDEX_BATCH_SOFT_TIME_LIMIT == 1200


def test_the_error_text_names_the_limit_and_its_setting():
    assert error_text(SoftTimeLimitExceeded(), index_documents) == (
        "SoftTimeLimitExceeded: indexer.tasks.index_documents ran past its soft time limit of 1200 s "
        "(INDEX_BATCH_SOFT_TIME_LIMIT)")
    assert error_text(TimeLimitExceeded(1860), prepare_build) == (
        "TimeLimitExceeded: indexer.tasks.prepare_build ran past its hard time limit of 1860 s "
        "(INDEX_BUILD_SOFT_TIME_LIMIT + TASK_HARD_TIME_LIMIT_GRACE)")
    assert error_text(ValueError("bad")) == "ValueError: bad"  # everything else as before


@pytest.mark.django_db
def test_a_batch_that_hit_the_limit_is_failed_with_that_text():
    """The task's own failure handler, as the worker calls it (soft limit: in the pool process;
    hard limit: in the worker's main process, Celery 5.7)."""
    collection = make_collection("limit-unit", 3, long_every=0)
    ids = list(collection.documents.values_list("pk", flat=True))
    Document.objects.filter(pk__in=ids).update(status=Document.Status.INDEXING)
    task = index_documents._get_current_object()
    task.on_failure(SoftTimeLimitExceeded(), "task-id", (ids,), {}, None)
    assert set(collection.documents.values_list("status", "last_error")) == {
        ("failed", "SoftTimeLimitExceeded: indexer.tasks.index_documents ran past its soft time limit of 1200 s "
                   "(INDEX_BATCH_SOFT_TIME_LIMIT)")}


def test_a_limit_must_be_positive():
    env = dict(os.environ, QUERY_SOFT_TIME_LIMIT="0")
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert "QUERY_SOFT_TIME_LIMIT must be a positive number of seconds, not 0.0" in result.stderr
