"""Listeners told of every search the page and the API answer, registered by apps above the
query path (search analytics, for one) when Django starts (their AppConfig.ready).

The query path does not import the apps built on it. A listener gets the request, where the
search came from ("page" or "api"), the parsed parameters, the answer and the time the search
took; it may add keys to the answer (the analytics app adds `search_id`).
"""
from __future__ import annotations

from collections.abc import Callable

SearchListener = Callable[[object, str, object, dict, float], None]

_listeners: list[SearchListener] = []


def register(listener: SearchListener) -> None:
    if listener not in _listeners:
        _listeners.append(listener)


def searched(request, channel: str, params, answer: dict, elapsed_ms: float) -> None:
    for listener in _listeners:
        listener(request, channel, params, answer, elapsed_ms)
