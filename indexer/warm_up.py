"""Load the bi-encoders before an embed worker takes its first task.

Loading a model (tokenizer, OpenVINO compile, the query widths' first runs) takes seconds on a
CPU. Paid inside a task, it delays the first indexing batch and the first searches whose query
vectors come from the embed queue (QUERY_EMBEDDING=queue), and it eats into the batch's time
limit: a soft limit that fires during the load lands in library code that may catch it, and the
batch then runs on to the hard limit, leaving its documents `indexing` (reconcile finds them
later). Loaded here, a task only encodes.

The embed worker's pool processes load, as they start, the site's EMBEDDING_MODEL and the
models of the collections and their live or building indices (as many as a process keeps:
4 in all). Only workers that consume the embed queue do this, and only with the prefork pool
(each child loads its own copy after the fork, like reranker/warm_up.py); under `-P solo` or
`-P threads` models load on first use.
"""
from __future__ import annotations

import logging
import time

from celery.signals import celeryd_after_setup, worker_process_init

log = logging.getLogger(__name__)

# Set in the worker's main process before the pool forks, read in each child.
_consumes_embed_queue = False


@celeryd_after_setup.connect
def _note_queues(sender, instance, **kwargs) -> None:
    from django.conf import settings

    global _consumes_embed_queue
    _consumes_embed_queue = settings.EMBED_QUEUE in instance.app.amqp.queues.consume_from


@worker_process_init.connect
def _warm_up_pool_process(**kwargs) -> None:
    if _consumes_embed_queue:
        warm_up_embedding_models(embedding_models_in_use())


def embedding_models_in_use() -> list[str]:
    """The site's default bi-encoders and those of the collections' current indices, newest
    collections first, at most as many as a process keeps."""
    from django.conf import settings
    from django.db import DatabaseError, connections

    from .embedding import _load_embedding_model
    from .models import Collection, IndexBuild

    models = [settings.EMBEDDING_MODEL]
    try:
        models += IndexBuild.objects.filter(status__in=[IndexBuild.Status.LIVE, *IndexBuild.IN_PROGRESS]) \
            .order_by("-created_at").values_list("model_id", flat=True)
        models += Collection.objects.exclude(embedding_model="").order_by("-pk") \
            .values_list("embedding_model", flat=True)
    except DatabaseError as exc:  # a database not migrated yet: the site's model only
        log.warning("warm-up: cannot read the collections' embedding models (%s)", exc)
    finally:
        # The pool process's first task opens its own connection, after Celery's per-process
        # clean-up of inherited ones.
        connections.close_all()
    unique = list(dict.fromkeys(m.strip() for m in models if m and m.strip()))
    return unique[: _load_embedding_model.cache_info().maxsize]


def warm_up_embedding_models(model_ids: list[str]) -> dict[str, str]:
    """Load each model; returns model -> "ok" or the reason it failed. A model that cannot load
    is logged, not raised: the worker still serves the others, and the batch that needs the broken
    one fails with the loader's error then."""
    from .embedding import load_embedding_model

    outcome = {}
    for model_id in model_ids:
        started = time.perf_counter()
        try:
            encoder = load_embedding_model(model_id)
        except Exception as exc:  # not installed, a damaged file, out of memory: the others still load
            log.warning("warm-up: embedding model %s did not load: %s: %s", model_id, type(exc).__name__, exc)
            outcome[model_id] = f"{type(exc).__name__}: {exc}"
            continue
        log.info("warm-up: embedding model %s ready in %.1f s: %s %s on %s", model_id,
                 time.perf_counter() - started, encoder.runtime, encoder.precision, encoder.device)
        outcome[model_id] = "ok"
    return outcome
