"""How many pairs fit in the time left, for the web process that decides what to send (admission
control, search/rerank_client.py) and the worker that scores it (reranker/tasks.py).

Both use the workers' measured speed (reranker/speed.py). The web process counts the pairs
already waiting for the model (reranker/backlog.py) as time that passes before its own request
is taken; the worker, holding the request, counts only the time left to the request's deadline
and scores in batches, looking at the clock before each, so that nothing is scored that would be
answered after the web process stopped waiting.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


def pairs_that_fit(seconds_left: float, pairs_per_second: float) -> int:
    """Whole pairs one process scores in `seconds_left` at `pairs_per_second`."""
    if seconds_left <= 0 or pairs_per_second <= 0:
        return 0
    return math.floor(seconds_left * pairs_per_second + 1e-9)


def expected_wait(backlog_pairs: int, pairs_per_second: float, processes: int) -> float:
    """Seconds before a request sent now is taken: the waiting pairs, shared by the processes."""
    return backlog_pairs / (pairs_per_second * max(1, processes))


# Of the time left, the share a worker plans to fill: scoring runs at the speed the machine has
# at that moment, which on shared cores wavers around the measured figure. The first batch is
# planned on the speed other requests measured, which under load runs up to twice too fast
# (docs/operating.md, "Under load"); later batches on the speed this request has seen.
DEADLINE_SAFETY = 0.9
FIRST_BATCH_SAFETY = 0.5
# What a batch costs besides its pairs (tokenising, one run of the graph, the result): a batch of
# a few pairs is not a few pairs' time.
BATCH_FIXED_SECONDS = 0.03


def pairs_a_worker_scores(seconds_left: float, pairs_per_second: float, first_batch: bool = True) -> int:
    """The pairs a worker plans for its next batch with `seconds_left` to the deadline
    (score_before); for the first batch, what it surely scores of a request it takes then.
    Admission sends no more, so that what it sends is scored, and nothing when the worker
    would score nothing."""
    share = FIRST_BATCH_SAFETY if first_batch else DEADLINE_SAFETY
    return pairs_that_fit(seconds_left * share - BATCH_FIXED_SECONDS, pairs_per_second)


@dataclass
class Admission:
    """What the web process may send to one model: `pairs` of the head (0: none), and why fewer
    than it wanted."""
    pairs: int
    wanted: int
    expected_wait: float = 0.0
    reason: str | None = None  # set when pairs == 0

    @property
    def saturated(self) -> bool:
        return self.pairs == 0


SATURATED = "the rerank workers are saturated"


def admit(wanted: int, budget: float, pairs_per_second: float | None, backlog_pairs: int, processes: int,
          round_trip: float) -> Admission:
    """The part of the head (`wanted` pairs) that comes back within `budget` seconds: the wait
    for the backlog, the scoring as the worker plans it (pairs_a_worker_scores), and `round_trip`
    (queue, result, polling) must all fit. Speed
    unknown: everything wanted (no worker has measured it; the worker still trims to its deadline)."""
    if not pairs_per_second:
        return Admission(wanted, wanted)
    wait = expected_wait(backlog_pairs, pairs_per_second, processes)
    fit = min(wanted, pairs_a_worker_scores(budget - wait - round_trip, pairs_per_second))
    return Admission(fit, wanted, wait, None if fit else SATURATED)


@dataclass
class ScoredPrefix:
    """What a worker scored of a request: the logits of the first len(logits) passages."""
    logits: list[float] = field(default_factory=list)
    offered: int = 0
    stopped: str | None = None  # "expired" (deadline passed before scoring), "deadline" (trimmed)
    # Seconds the scoring ended past `deadline` (0: in time). The web process waits a round trip
    # longer (RERANK_ROUND_TRIP_SECONDS), so an answer that overran a little is still read.
    overrun: float = 0.0
    late: bool = False  # scoring ended after `answer_by` (without it, `deadline`): for nobody
    batches: list[tuple[int, float]] = field(default_factory=list)  # (pairs, seconds) of each batch scored


def score_before(deadline: float | None, passages: Sequence[str], score: Callable[[Sequence[str]], Sequence[float]],
                 pairs_per_second: float | None, batch_size: int,
                 clock: Callable[[], float] = time.time, answer_by: float | None = None) -> ScoredPrefix:
    """Score the longest prefix of `passages` that ends before `deadline` (Unix time; None: all),
    one batch at a time. Before each batch the clock is read again and the batch is cut to the
    pairs that still fit in DEADLINE_SAFETY of the time left, at the slower of the measured
    `pairs_per_second` and the speed this request's batches have shown so far (unknown: the whole
    batch while time is left), less a batch's fixed cost, and the first batch to FIRST_BATCH_SAFETY
    of it; nothing more is scored once the deadline has passed. `answer_by` (Unix time, after
    `deadline`): when the web process stops waiting; scoring that ends after it is `late`."""
    result = ScoredPrefix(offered=len(passages))
    if deadline is not None and clock() >= deadline:
        result.stopped = "expired"
        return result
    speed = pairs_per_second or 0.0
    start = 0
    while start < len(passages):
        size = min(batch_size, len(passages) - start)
        if deadline is not None:
            left = deadline - clock()
            fit = size if not speed and left > 0 else pairs_a_worker_scores(left, speed, not result.batches)
            if fit < size:
                size = fit
                result.stopped = "deadline"
            if size <= 0:
                break
        began = clock()
        result.logits.extend(float(x) for x in score(passages[start:start + size]))
        took = clock() - began
        result.batches.append((size, took))
        if took > 0:
            speed = min(speed, size / took) if speed else size / took
        start += size
        if result.stopped:
            break
    if deadline is not None:
        finished = clock()
        result.overrun = max(0.0, finished - deadline)
        result.late = finished > (answer_by if answer_by is not None else deadline)
    return result
