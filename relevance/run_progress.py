"""Progress of an admin-started run (relevance.models.RerankerRun), written into its record.

`evaluate` and `train_reranker` take `progress` (the signature of common.progress.progress:
an iterable or `total=`, `desc=`, `unit=`; returns a tqdm-like bar) and `echo` (one line of
output). The commands pass tqdm and their stdout; a run started from the admin passes a
`RunProgress`, whose bars and lines land in the record that the admin's run page polls.
Writes are throttled (at most one every `interval` seconds, plus each stage's end), so a
stage of thousands of tiny steps does not become thousands of database writes.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable

from django.utils import timezone

from .models import RerankerRun

# Lines of output kept in the record (the newest ones); the head of a long log says little.
LOG_LINES_KEPT = 200
TEXT_MAX = 500  # RerankerRun.progress_text


class RunBar:
    """The part of tqdm's interface the commands use: iterate, update, set_postfix, close, n."""

    def __init__(self, owner: "RunProgress", iterable: Iterable | None, total: int | None, desc: str, unit: str):
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.owner, self.iterable, self.total = owner, iterable, total
        self.desc, self.unit = desc, unit
        self.n = 0
        self.postfix = ""
        owner._show(self, force=True)

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        self.owner._show(self)

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        self.owner._show(self, force=True)

    def text(self) -> str:
        total = f"/{self.total}" if self.total is not None else ""
        line = f"{self.desc}: {self.n}{total} {self.unit}".rstrip()
        return (f"{line} ({self.postfix})" if self.postfix else line)[:TEXT_MAX]


class RunProgress:
    """`progress` and `echo` for one run. `save(**fields)` writes fields of the run's record."""

    def __init__(self, save: Callable[..., None], interval: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.save, self.interval, self.clock = save, interval, clock
        self.lines: list[str] = []
        self._last_write = None

    @classmethod
    def for_run(cls, run_id: int, interval: float = 1.0) -> "RunProgress":
        def save(**fields):
            RerankerRun.objects.filter(pk=run_id).update(reported_at=timezone.now(), **fields)

        return cls(save, interval)

    def progress(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", **_tqdm_options) -> RunBar:
        return RunBar(self, iterable, total, desc, unit)

    def echo(self, line: str) -> None:
        self.lines.extend(str(line).rstrip("\n").splitlines() or [""])
        del self.lines[:-LOG_LINES_KEPT]
        self.save(log="\n".join(self.lines))

    def write(self, line: str) -> None:
        """`echo` under the name the commands' stdout has (train_collection writes to it)."""
        self.echo(line)

    def _show(self, bar: RunBar, force: bool = False) -> None:
        now = self.clock()
        if not force and self._last_write is not None and now - self._last_write < self.interval:
            return
        self._last_write = now
        self.save(progress_done=bar.n, progress_total=bar.total or 0, progress_text=bar.text())
