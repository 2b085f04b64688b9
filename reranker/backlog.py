"""The rerank work waiting for each model, shared in Redis by the web processes and the workers.

Admission control (search/rerank_client.py) needs to know, before it sends a request, how long
the request would wait: the pairs already asked of a model, whether still in the queue or being
scored, over the speed of the pool processes that serve it (reranker/speed.py). A queue length
alone does not say it (a message carries 10 or 50 pairs), so every request is entered here:

- `rerank-backlog:<model>`, a sorted set: one member `<task id>:<pairs>` per request sent and not
  finished, scored by its deadline (Unix time). The web process adds it when it sends; the worker
  removes it when it has answered or dropped it, the web process when it stops waiting. A member
  whose deadline is past is dropped when read, so a worker killed mid-request leaves nothing behind
  for long.
- `rerank-processes:<model>`, a sorted set: the worker pool processes that served the model,
  scored by when they last did. Those seen within ACTIVE_SECONDS share the backlog.

Redis down: no backlog is known (admission then decides by speed alone, as before it existed).
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import NamedTuple

import redis
from django.conf import settings

from common.quick_redis import quick_redis

log = logging.getLogger(__name__)

# A pool process that served a model this recently still serves it.
ACTIVE_SECONDS = 120.0


def _backlog_key(model_id: str) -> str:
    return f"{settings.CELERY_KEY_PREFIX}rerank-backlog:{model_id}"


def _processes_key(model_id: str) -> str:
    return f"{settings.CELERY_KEY_PREFIX}rerank-processes:{model_id}"


def process_name() -> str:
    """This pool process, as the processes set names it."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Backlog(NamedTuple):
    pairs: int  # pairs asked of the model and not answered yet
    requests: int
    processes: int  # pool processes serving the model (at least 1)


def read_backlog(model_id: str, now: float | None = None) -> Backlog | None:
    """The work waiting for `model_id`, or None when Redis cannot be asked."""
    now = time.time() if now is None else now
    try:
        pipe = quick_redis().pipeline(transaction=False)
        pipe.zremrangebyscore(_backlog_key(model_id), "-inf", now)
        pipe.zrange(_backlog_key(model_id), 0, -1)
        pipe.zremrangebyscore(_processes_key(model_id), "-inf", now - ACTIVE_SECONDS)
        pipe.zcard(_processes_key(model_id))
        _, members, _, processes = pipe.execute()
    except redis.RedisError as exc:
        log.warning("rerank backlog unavailable: %s", exc)
        return None
    pairs = sum(int(member.rsplit(b":", 1)[1]) for member in members)
    return Backlog(pairs=pairs, requests=len(members), processes=max(1, processes))


def add_request(model_id: str, task_id: str, pairs: int, deadline: float) -> None:
    """A request sent: `pairs` pairs for `model_id` that nobody needs after `deadline` (Unix time)."""
    try:
        quick_redis().zadd(_backlog_key(model_id), {f"{task_id}:{pairs}": deadline})
    except redis.RedisError as exc:
        log.warning("rerank request not entered in the backlog: %s", exc)


def remove_request(model_id: str, task_id: str, pairs: int) -> None:
    """A request answered, dropped, or no longer waited for."""
    try:
        quick_redis().zrem(_backlog_key(model_id), f"{task_id}:{pairs}")
    except redis.RedisError as exc:
        log.warning("rerank request not removed from the backlog: %s", exc)


def note_process(model_id: str, now: float | None = None) -> None:
    """This pool process serves `model_id` (called by the worker as it answers)."""
    try:
        quick_redis().zadd(_processes_key(model_id), {process_name(): time.time() if now is None else now})
    except redis.RedisError as exc:
        log.warning("rerank process not noted: %s", exc)
