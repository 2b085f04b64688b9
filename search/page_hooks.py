"""Additions to the search page made by apps above the query path.

The query path does not import the apps built on it (relevance work, for one); they register a
hook here when Django starts (their AppConfig.ready), and the search page calls each hook with the
request and the page's context once the results are in.
"""
from __future__ import annotations

from collections.abc import Callable

PageHook = Callable[[object, dict], None]

_hooks: list[PageHook] = []


def register(hook: PageHook) -> None:
    if hook not in _hooks:
        _hooks.append(hook)


def apply(request, context: dict) -> None:
    for hook in _hooks:
        hook(request, context)
