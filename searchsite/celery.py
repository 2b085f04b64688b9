"""The Celery app: named queues, `embed` (indexer), `rerank` (reranker) and `train` (evaluate and
train runs started from the admin, relevance/run_tasks.py).

Each app's tasks live in its own `tasks` module and are routed by module name, so a worker
started with `-Q embed` only ever loads the bi-encoder and a `-Q rerank` worker only the
cross-encoder.
"""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")

from django.conf import settings  # noqa: E402  (needs DJANGO_SETTINGS_MODULE)

app = Celery("searchsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_routes = {
    "indexer.tasks.*": {"queue": settings.EMBED_QUEUE},
    "search.tasks.*": {"queue": settings.EMBED_QUEUE},
    "reranker.tasks.*": {"queue": settings.RERANK_QUEUE},
    "relevance.run_tasks.*": {"queue": settings.TRAIN_QUEUE},
}
app.conf.task_default_queue = settings.EMBED_QUEUE
# A rerank worker's pool processes load their cross-encoders before they report ready
# (reranker/warm_up.py); on a CPU that takes longer than Celery's 4 s default.
app.conf.worker_proc_alive_timeout = 300
app.autodiscover_tasks()
app.autodiscover_tasks(["relevance"], related_name="run_tasks")  # the admin's evaluate/train runs

import indexer.warm_up  # noqa: E402,F401  (connects the warm-ups to the worker's signals)
import reranker.warm_up  # noqa: E402,F401
