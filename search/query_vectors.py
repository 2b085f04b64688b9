"""The query's vector: embedded with the model that built the index, kept in a per-process LRU.

QUERY_EMBEDDING picks where the model runs: "local" (this process, loaded once) or "queue" (an
`embed` worker, which has the model loaded already, so the web process needs neither torch nor
the model in memory). The queue is reached by task name (EMBED_TASK, defined in search/tasks.py
under that name) so that this module does not import the task module that imports it.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from celery import current_app
from celery.exceptions import TimeoutError as CeleryTimeout
from django.conf import settings

from indexer.embedding import load_embedding_model

from .errors import EMBEDDER_DOWN, MISCONFIGURED, SearchBackendError

EMBED_TASK = "search.tasks.embed_queries"


class VectorCache:
    """A thread-safe LRU of query vectors keyed by (model, query text)."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            vector = self._items.get(key)
            if vector is not None:
                self._items.move_to_end(key)
            return vector

    def put(self, key, vector) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = vector
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


vector_cache = VectorCache(settings.QUERY_VECTOR_CACHE_SIZE)


def encode_queries(texts: list[str], model_id: str) -> list[list[float]]:
    """Unit-length vectors with the model's query prompt (the index stores unit vectors and
    compares by dot product)."""
    return load_embedding_model(model_id).encode_queries(texts).tolist()


def embed_query(text: str, model_id: str) -> tuple[list[float], bool]:
    """(vector, came from the cache)."""
    key = (model_id, text)
    vector = vector_cache.get(key)
    if vector is not None:
        return vector, True
    if settings.QUERY_EMBEDDING == "queue":
        result = current_app.send_task(EMBED_TASK, args=[[text], model_id], queue=settings.EMBED_QUEUE,
                                       expires=settings.QUERY_EMBEDDING_TIMEOUT)
        try:
            vector = result.get(timeout=settings.QUERY_EMBEDDING_TIMEOUT)[0]
        except CeleryTimeout:
            raise SearchBackendError(
                f"no embed worker encoded the query within {settings.QUERY_EMBEDDING_TIMEOUT:g} s", EMBEDDER_DOWN) from None
        finally:
            result.forget()
    elif settings.QUERY_EMBEDDING == "local":
        vector = encode_queries([text], model_id)[0]
    else:
        raise SearchBackendError(f"QUERY_EMBEDDING must be 'local' or 'queue', not {settings.QUERY_EMBEDDING!r}",
                                 MISCONFIGURED)
    vector_cache.put(key, vector)
    return vector, False

