"""One Redis client per URL for calls that must never hang a request or a task: REDIS_URL with
short timeouts (a scrape, a rerank's admission check, a worker's counters)."""
from __future__ import annotations

import threading

import redis
from django.conf import settings

# Redis is asked at most this long per call (seconds).
REDIS_TIMEOUT = 0.25

_clients: dict[str, redis.Redis] = {}
_lock = threading.Lock()


def quick_redis() -> redis.Redis:
    url = settings.REDIS_URL
    with _lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT,
                                                          socket_connect_timeout=REDIS_TIMEOUT)
        return client
