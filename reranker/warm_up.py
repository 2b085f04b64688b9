"""Load the cross-encoders before a rerank worker takes its first task.

Loading a model takes seconds (longer than RERANK_TIMEOUT on a CPU), so without this the
first search after a worker starts, or after a collection gets a new reranker, comes back
"not reranked". The rerank worker's pool processes load the site's RERANKER_MODEL and the
collections' own `reranker_model`s (as many as a process keeps: 4 in all) as they start;
`train_reranker` (also run by `demo_reranker`) sends a `warm_up` task when it installs a
model, which one pool process takes.

Only workers that consume the rerank queue do this (an embed worker never loads a
cross-encoder), and only with the prefork pool (the default, used by the Procfile and
docker-compose): each child loads its own copy after the fork, since torch and CUDA state do
not survive one. Under `-P solo` or `-P threads` models load on first use.
"""
from __future__ import annotations

import logging
import socket
import time

from celery.signals import celeryd_after_setup, worker_process_init

log = logging.getLogger(__name__)

# Set in the worker's main process before the pool forks, read in each child.
_consumes_rerank_queue = False


@celeryd_after_setup.connect
def _note_queues(sender, instance, **kwargs) -> None:
    from django.conf import settings

    global _consumes_rerank_queue
    _consumes_rerank_queue = settings.RERANK_QUEUE in instance.app.amqp.queues.consume_from


@worker_process_init.connect
def _warm_up_pool_process(**kwargs) -> None:
    if _consumes_rerank_queue:
        warm_up_models(models_in_use())


def models_in_use() -> list[str]:
    """The site's reranker and each collection's own one, at most as many as a process keeps."""
    from django.conf import settings
    from django.db import DatabaseError, connections

    from indexer.models import Collection

    from .cross_encoder import load_reranker

    models = [(settings.RERANKER_MODEL or "").strip()]
    try:
        models += Collection.objects.exclude(reranker_model="").values_list("reranker_model", flat=True)
    except DatabaseError as exc:  # a database not migrated yet: the site's model only
        log.warning("warm-up: cannot read the collections' rerankers (%s)", exc)
    finally:
        # The pool process's first task opens its own connection, after Celery's per-process
        # clean-up of inherited ones.
        connections.close_all()
    unique = list(dict.fromkeys(m.strip() for m in models if m and m.strip()))
    return unique[: load_reranker.cache_info().maxsize]


def warm_up_models(model_ids: list[str]) -> dict[str, str]:
    """Load each model, measure its speed (reranker/speed.py); returns model -> "ok" or the
    reason it failed.

    A model that cannot load is logged, not raised: the worker still serves the others, and
    a search that needs the broken one gets the loader's clear error then.
    """
    from .backlog import note_process
    from .cross_encoder import RerankerUnavailable, load_reranker
    from .speed import measure_speed, write_speed

    outcome = {}
    for model_id in model_ids:
        started = time.perf_counter()
        try:
            reranker = load_reranker(model_id)
            speed = write_speed(reranker, measure_speed(reranker), socket.gethostname(), smooth=False)
            note_process(model_id)  # this process shares the model's backlog (reranker/backlog.py)
        except RerankerUnavailable as exc:
            log.error("warm-up: %s", exc)
            outcome[model_id] = str(exc)
            continue
        except Exception as exc:  # out of GPU memory, a damaged file, ...: the others still load
            log.exception("warm-up: reranker %s failed", model_id)
            outcome[model_id] = f"{type(exc).__name__}: {exc}"
            continue
        log.info("warm-up: reranker %s ready in %.1f s: %s %s on %s, %.0f pairs/s at %d tokens", model_id,
                 time.perf_counter() - started, reranker.runtime, reranker.precision, reranker.device, speed,
                 reranker.max_length)
        outcome[model_id] = "ok"
    return outcome
