"""Admission control's estimate (reranker/deadlines.py admit) and the worker's deadline logic
(score_before): how many pairs fit, when a request is refused, when scoring stops."""
from __future__ import annotations

import pytest

from reranker.deadlines import SATURATED, admit, expected_wait, pairs_a_worker_scores, pairs_that_fit, score_before


def test_pairs_that_fit_rounds_down_and_never_goes_negative():
    assert pairs_that_fit(0.3, 100.0) == 30
    assert pairs_that_fit(0.299, 100.0) == 29
    assert pairs_that_fit(0.0, 100.0) == 0
    assert pairs_that_fit(-1.0, 100.0) == 0
    assert pairs_that_fit(1.0, 0.0) == 0


def test_expected_wait_shares_the_backlog_among_processes():
    assert expected_wait(200, 100.0, 1) == pytest.approx(2.0)
    assert expected_wait(200, 100.0, 4) == pytest.approx(0.5)
    assert expected_wait(200, 100.0, 0) == pytest.approx(2.0)  # no process seen yet: counted as one


def test_an_idle_worker_gets_the_whole_head():
    admission = admit(wanted=30, budget=2.0, pairs_per_second=100.0, backlog_pairs=0, processes=1, round_trip=0.1)
    assert admission.pairs == 30 and not admission.saturated and admission.reason is None


def test_a_busy_worker_gets_the_part_of_the_head_that_fits():
    # 150 pairs waiting at 100 pairs/s: 1.5 s of wait, 2.0 - 1.5 - 0.1 = 0.4 s left, of which the
    # worker plans its first batch in half, less a batch's fixed cost: 0.17 s, 17 of 50.
    admission = admit(wanted=50, budget=2.0, pairs_per_second=100.0, backlog_pairs=150, processes=1, round_trip=0.1)
    assert admission.pairs == 17 and admission.expected_wait == pytest.approx(1.5)
    assert admission.pairs == pairs_a_worker_scores(0.4, 100.0)


def test_admission_sends_nothing_that_the_worker_would_not_score():
    # 0.05 s left after the wait: the worker would score nothing (half of it is under a batch's
    # fixed cost), so nothing is sent and the answer says "saturated" at once.
    admission = admit(wanted=50, budget=2.0, pairs_per_second=100.0, backlog_pairs=185, processes=1, round_trip=0.1)
    assert pairs_that_fit(2.0 - 1.85 - 0.1, 100.0) >= 4  # the time left alone would have sent a few
    assert admission.pairs == 0 and admission.saturated


def test_a_saturated_worker_gets_nothing_and_says_so():
    admission = admit(wanted=50, budget=2.0, pairs_per_second=100.0, backlog_pairs=195, processes=1, round_trip=0.1)
    assert admission.pairs == 0 and admission.saturated and admission.reason == SATURATED
    assert SATURATED == "the rerank workers are saturated"
    # Two processes halve the wait: the same backlog then leaves room.

    assert admit(50, 2.0, 100.0, 195, 2, 0.1).pairs == min(50, pairs_a_worker_scores(2.0 - 0.975 - 0.1, 100.0)) == 43


def test_unknown_speed_sends_everything_wanted():
    admission = admit(wanted=10, budget=2.0, pairs_per_second=None, backlog_pairs=10_000, processes=1, round_trip=0.1)
    assert admission.pairs == 10 and not admission.saturated


class Clock:
    """A clock that each scored pair moves forward by `per_pair` seconds, and each batch by
    `per_batch` more."""

    def __init__(self, now: float, per_pair: float, per_batch: float = 0.0):
        self.now, self.per_pair, self.per_batch = now, per_pair, per_batch
        self.batches: list[int] = []

    def __call__(self) -> float:
        return self.now

    def score(self, passages):
        self.batches.append(len(passages))
        self.now += self.per_batch + self.per_pair * len(passages)
        return [float(len(p)) for p in passages]


def test_a_request_taken_after_its_deadline_is_not_scored():
    clock = Clock(now=100.0, per_pair=0.01)
    result = score_before(99.0, ["a"] * 20, clock.score, 100.0, 8, clock=clock)
    assert result.stopped == "expired" and result.logits == [] and clock.batches == [] and not result.late


def test_the_worker_scores_only_what_ends_before_the_deadline_batch_by_batch():
    # 0.35 s left at 100 pairs/s: the first batch planned in half of it, the next in 90%, each less
    # a batch's fixed cost (0.03 s): 10, 10, 10, then 0.05 s × 0.9 − 0.03 → 1 pair.
    clock = Clock(now=100.0, per_pair=0.01)
    passages = [f"p{i}" for i in range(40)]
    result = score_before(100.35, passages, clock.score, 100.0, 10, clock=clock)
    assert clock.batches == [10, 10, 10, 1]
    assert result.logits == [float(len(p)) for p in passages[:31]] and result.stopped == "deadline"
    assert not result.late and result.offered == 40


def test_a_worker_slower_than_measured_plans_the_next_batches_at_the_speed_it_sees():
    # Measured 100 pairs/s, runs at 50: after the first batch it plans at 50 and ends in time.
    clock = Clock(now=100.0, per_pair=0.02)
    result = score_before(100.5, ["x"] * 40, clock.score, 100.0, 10, clock=clock)
    assert clock.batches[:2] == [10, 10] and sum(clock.batches) < 25
    assert result.stopped == "deadline" and not result.late and clock.now <= 100.5


def test_a_slower_worker_than_measured_stops_before_the_next_batch():
    # Measured 100 pairs/s but runs at 20: after the first batch of 10 (0.5 s) the deadline has passed.
    clock = Clock(now=100.0, per_pair=0.05)
    result = score_before(100.4, ["x"] * 30, clock.score, 100.0, 10, clock=clock)
    assert clock.batches == [10] and len(result.logits) == 10 and result.stopped == "deadline"
    assert result.late  # counted: the first batch ended after the deadline


def test_an_answer_past_the_deadline_is_late_only_once_the_web_process_stopped_waiting():
    # The first batch of 10 ends at 100.5: 0.1 s past the deadline. The web process waits until
    # answer_by; before it the answer is still read (overrun, not late), after it it is for nobody.
    for answer_by, late in ((100.6, False), (100.45, True)):
        clock = Clock(now=100.0, per_pair=0.05)
        result = score_before(100.4, ["x"] * 30, clock.score, 100.0, 10, clock=clock, answer_by=answer_by)
        assert clock.batches == [10] and abs(result.overrun - 0.1) < 1e-9 and result.late is late


def test_a_request_taken_late_is_planned_for_a_machine_twice_as_slow_as_measured():
    # Taken with 0.3 s left, measured 160 pairs/s, but the loaded machine scores at 80 and each batch
    # costs 0.03 s more: planned on 90% of what is left, 43 pairs would take 0.57 s (late);
    # planned on half, 19 pairs take 0.27 s and end in time.
    clock = Clock(now=100.0, per_pair=1 / 80, per_batch=0.03)
    result = score_before(100.3, ["x"] * 50, clock.score, 160.0, 32, clock=clock)
    assert clock.batches[0] == 19 and result.stopped == "deadline" and not result.late and clock.now <= 100.3


def test_a_batch_of_a_few_pairs_is_not_started_when_its_fixed_cost_does_not_fit():
    # 0.05 s left: half of it is less than a batch's fixed cost, so nothing is scored (and nothing late).
    clock = Clock(now=100.0, per_pair=0.005, per_batch=0.03)
    result = score_before(100.05, ["x"] * 10, clock.score, 200.0, 32, clock=clock)
    assert clock.batches == [] and result.logits == [] and result.stopped == "deadline" and not result.late


def test_no_deadline_scores_everything():
    clock = Clock(now=100.0, per_pair=1.0)
    result = score_before(None, ["x"] * 7, clock.score, 100.0, 3, clock=clock)
    assert clock.batches == [3, 3, 1] and len(result.logits) == 7 and result.stopped is None and not result.late
