"""Long tasks under Celery: a real embed worker reserves one message at a time, and an indexing
batch that runs past its soft time limit ends `failed` saying so (settings: the *_SOFT_TIME_LIMIT
variables, CELERY_TASK_ANNOTATIONS). The error text for both limits, without a worker:
tests/unit/test_time_limits.py."""
from __future__ import annotations

import subprocess
import sys

import pytest
from django.conf import settings

from indexer.models import Document
from searchsite.celery import app
from tests.support.indexing import make_collection, make_text, statuses, wait_for
from tests.support.workers import ROOT, Worker, worker_env

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_batch_past_its_soft_time_limit_ends_failed_saying_so(es):
    collection = make_collection("time-limit", 2, long_every=0)
    # Far more than a second of encoding on any CPU: hundreds of chunks.
    big = Document.objects.get(collection=collection, external_id="d000")
    big.text = make_text(1, 60_000)
    big.refresh_hash()
    big.save()
    queue = f"{settings.EMBED_QUEUE}-time-limit"
    # The worker keeps the default limit (1200 s): the one in force is the sender's (below).
    worker = Worker(queue, extra_env={"EMBED_QUEUE": queue, "INDEX_RETRY_BACKOFF": "1",
                                      "INDEX_RETRY_BACKOFF_MAX": "1"}).start()
    try:
        # One message reserved per pool process, not Celery's default of four.
        stats = app.control.inspect([worker.name], timeout=5).stats()
        assert stats[worker.name]["prefetch_count"] == 1
        # The pool process loads the bi-encoder as it starts (indexer/warm_up.py): the batch only
        # encodes, and the soft limit fires in that loop, not inside the model's loading code.
        wait_for(lambda: f"warm-up: embedding model {settings.EMBEDDING_MODEL} ready" in worker.log_since_start(),
                 timeout=120, what="the embed worker's warm-up")

        ids = list(collection.documents.values_list("pk", flat=True))
        Document.objects.filter(pk__in=ids).update(status=Document.Status.QUEUED)
        # The limits travel in the message, set from the settings of the process that queues the
        # task (web, beat, a worker): queue it from a process with the tiny limit.
        sender = subprocess.run(
            [sys.executable, "manage.py", "shell", "--no-imports", "-c",
             f"from indexer.tasks import index_documents; index_documents.apply_async(args=[{ids}], queue={queue!r})"],
            cwd=ROOT, env=worker_env({"INDEX_BATCH_SOFT_TIME_LIMIT": "1"}), capture_output=True, text=True,
            timeout=120)
        assert sender.returncode == 0, sender.stderr
        wait_for(lambda: statuses(collection) == {"failed": 2}, timeout=180,
                 what=f"failed, now {statuses(collection)}")
    finally:
        worker.stop()
    assert set(collection.documents.values_list("last_error", flat=True)) == {
        "SoftTimeLimitExceeded: indexer.tasks.index_documents ran past its soft time limit of 1 s "
        "(INDEX_BATCH_SOFT_TIME_LIMIT)"
    }
    assert "Soft time limit (1.0s) exceeded for indexer.tasks.index_documents" in worker.log_tail(200)
