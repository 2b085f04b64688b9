"""Progress bars for management commands, in a terminal and in line-based output alike.

tqdm redraws its bar with carriage returns, which a terminal shows in place but honcho
(`make run`), log files and CI only show once a newline comes: at the end. Off a terminal the
same bar is therefore written as whole lines to stdout, at most every 30 seconds.
"""
from __future__ import annotations

import sys

from tqdm import tqdm

LINE_INTERVAL_SECONDS = 30.0


class _Lines:
    """A file for tqdm that turns each redraw into one line."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        for part in text.replace("\r", "\n").split("\n"):
            if part.strip():
                self.stream.write(part.rstrip() + "\n")
        self.stream.flush()

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable=None, **kwargs) -> tqdm:
    """tqdm(iterable, **kwargs) on a terminal; whole lines every 30 s elsewhere."""
    if sys.stderr.isatty():
        return tqdm(iterable, **kwargs)
    kwargs.setdefault("mininterval", LINE_INTERVAL_SECONDS)
    kwargs.setdefault("maxinterval", LINE_INTERVAL_SECONDS * 2)
    return tqdm(iterable, file=_Lines(sys.stdout), **kwargs)
