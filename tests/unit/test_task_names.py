"""The query path reaches the workers by task name (search/query_vectors.py, search/rerank_client.py)
so that no library module imports a task module: each name must be a task the workers register,
routed to the queue the workers of that kind consume."""
from django.conf import settings

from search.query_vectors import EMBED_TASK
from search.rerank_client import RERANK_TASK
from searchsite.celery import app


def registered_tasks():
    app.loader.import_default_modules()  # what a worker does at start: every app's tasks module
    return app.tasks


def test_the_embed_task_name_is_the_search_task_on_the_embed_queue():
    from search.tasks import embed_queries

    assert registered_tasks()[EMBED_TASK] is embed_queries._get_current_object()  # shared_task gives a proxy
    assert app.amqp.router.route({}, EMBED_TASK)["queue"].name == settings.EMBED_QUEUE


def test_the_rerank_task_name_is_the_reranker_task_on_the_rerank_queue():
    from reranker.tasks import rerank

    assert registered_tasks()[RERANK_TASK] is rerank._get_current_object()
    assert app.amqp.router.route({}, RERANK_TASK)["queue"].name == settings.RERANK_QUEUE
