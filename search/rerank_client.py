"""Second stage of a search: the head of the first stage's list scored by the rerank workers
(reranker/tasks.py) within the latency budget, and reordered by their logits.

As many chunks go to the workers as they score within RERANK_TARGET_SECONDS at their measured
speed (reranker/speed.py), at most RERANK_TOP_N; each chunk to its collection's reranker (else
the site's), one request per model, all sent at once, and the web process waits at most
RERANK_TIMEOUT. Each model's chunks are reordered among the places they held, by the model's
fusion of its logits with the first stage; the others keep their places. When a worker is slow
or missing, fails, or no model is set, that share keeps the first-stage order, and the outcome
says why when nothing was reranked: never an error page.

Admission control (RERANK_ADMISSION, on by default): before sending, each share is cut to the
prefix that can come back within RERANK_TIMEOUT, given the pairs already waiting for that model
(queued or being scored, reranker/backlog.py) and the workers' speed; when none fits it is not
sent and the answer says at once "not reranked: the rerank workers are saturated", instead of
waiting the whole budget for an answer the queue makes impossible. The request carries its
deadline, and the worker drops or cuts what it could not answer in time (reranker/tasks.py).

The workers are reached by task name (RERANK_TASK, the name reranker/tasks.py registers) so that
this library module does not import an entry point.
"""
from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass, field

import redis
from celery import current_app
from celery.exceptions import TimeoutError as CeleryTimeout
from django.conf import settings

from common.service_metrics import RERANK_ADMISSION, RERANK_OUTCOMES, RERANK_SECONDS
from reranker.backlog import add_request, read_backlog, remove_request
from reranker.cross_encoder import configured_model
from reranker.deadlines import SATURATED, Admission, admit
from reranker.fusion import Fusion, ModelFusion
from reranker.speed import read_speed

from .retrieval import Hit

log = logging.getLogger(__name__)

RERANK_TASK = "reranker.tasks.rerank"


@dataclass
class Share:
    """One reranker model's part of the head: the positions (in the first-stage list) of the
    chunks it scores, and what came back."""
    model: str
    sent_model: str  # "" lets the worker use its RERANKER_MODEL setting
    positions: list[int]
    reranked: bool = False
    reason: str | None = None
    outcome: str = "not_sent"  # reranked, or the kind of `reason` (the metrics' label)
    logits: list[float] | None = None
    fusion: ModelFusion = ModelFusion()
    runtime: str | None = None
    precision: str | None = None
    ms: float = 0.0

    def to_dict(self, mode: str) -> dict:
        return {"model": self.model, "candidates": len(self.positions), "applied": self.reranked,
                "not_reranked": self.reason, "runtime": self.runtime, "precision": self.precision,
                "fusion": self.fusion.for_mode(mode).to_dict() if self.reranked else None,
                "ms": round(self.ms, 2)}


@dataclass
class RerankOutcome:
    reranked: bool  # at least one model's share was reranked
    reason: str | None = None  # why not (nothing reranked), shown as "not reranked: <reason>"
    ms: float = 0.0
    shares: list[Share] = field(default_factory=list)
    kind: str = "reranked"  # reranked, or the kind of `reason` (Share.outcome; the metrics' label)

    @property
    def candidates(self) -> int:
        """Chunks sent to a reranker."""
        return sum(len(share.positions) for share in self.shares)

    @property
    def reranked_chunks(self) -> int:
        return sum(len(share.positions) for share in self.shares if share.reranked)

    @property
    def model(self) -> str | None:
        """The model, when one model reranked (or was asked to rerank) the whole head."""
        models = {share.model for share in self.shares}
        return models.pop() if len(models) == 1 else None


def passage_text(hit: Hit) -> str:
    """What the cross-encoder reads for a chunk: its document's title, then the chunk (the same
    text the bi-encoder embedded, see indexer/pipeline.py)."""
    return f"{hit.title}\n{hit.text}" if hit.title else hit.text


def withdraw_request(task_id: str) -> bool:
    """Take an unanswered rerank request back out of the queue; True if it was still there.

    A request still in the queue after the budget was taken by no worker: none is running (or
    all are busy). Withdrawing it also keeps a queue without workers from filling Redis with
    requests nobody will read. The key layout is kombu's Redis transport: one list per queue,
    named <CELERY_KEY_PREFIX><queue>, holding JSON messages whose headers carry the task id.
    """
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
    key = f"{settings.CELERY_KEY_PREFIX}{settings.RERANK_QUEUE}"
    needle = task_id.encode()
    try:
        for message in client.lrange(key, 0, -1):
            if needle in message:
                return client.lrem(key, 1, message) == 1
    except redis.RedisError:
        return False
    finally:
        client.close()
    return False


# How often the web process looks for the reranker's answer (seconds). Celery's own
# `result.get(timeout=...)` with the Redis backend checks its timeout only once a second, which
# would overrun a latency budget of a fraction of a second; a Redis GET every few ms costs little.
RESULT_POLL_SECONDS = 0.003


def wait_for(result, deadline: float):
    """The task's return value, or CeleryTimeout at `deadline` (time.perf_counter())."""
    while not result.ready():
        if time.perf_counter() >= deadline:
            raise CeleryTimeout(f"no answer from task {result.id}")
        time.sleep(RESULT_POLL_SECONDS)
    try:
        return result.get(timeout=1)  # ready: read from the result already fetched; raises the task's error
    finally:
        result.forget()


def plan_shares(hits: list[Hit], collections: dict) -> tuple[list[Share], str | None]:
    """Which chunks go to which reranker: the longest first-stage prefix (at most RERANK_TOP_N
    chunks) whose estimated scoring time fits RERANK_TARGET_SECONDS at the workers' measured
    speed of each model (reranker/speed.py), never fewer than RERANK_MIN_CANDIDATES. A chunk
    goes to its collection's own reranker, else the site's; chunks of collections with neither
    keep their place. Returns (shares, why nothing can be reranked)."""
    if not hits:
        return [], "no results to rerank"
    budget = settings.RERANK_TARGET_SECONDS
    floor = max(1, settings.RERANK_MIN_CANDIDATES)
    shares: dict[str, Share] = {}
    speeds: dict[str, float | None] = {}
    spent, sent = 0.0, 0
    for position, hit in enumerate(hits[: settings.RERANK_TOP_N]):
        own = collections[hit.collection].reranker_model.strip()
        model = configured_model(own)
        if not model:
            continue
        if model not in speeds:
            speeds[model] = read_speed(model)
        # Unknown speed (no worker has measured it yet): as if only the floor fitted.
        cost = 1.0 / speeds[model] if speeds[model] else budget / floor
        if sent >= floor and spent + cost > budget:
            break
        spent += cost
        sent += 1
        shares.setdefault(model, Share(model=model, sent_model=own, positions=[])).positions.append(position)
    if not shares:
        return [], no_model_reason(hits, collections)
    return list(shares.values()), None


def no_model_reason(hits: list[Hit], collections: dict) -> str:
    """Why none of these hits has a reranker: the generic reason, unless a collection's automatic
    training said why it installed none (Collection.reranker_note, relevance/run_tasks.py)."""
    notes = [f"{slug}: {collections[slug].reranker_note}" for slug in dict.fromkeys(hit.collection for hit in hits)
             if collections[slug].reranker_note]
    return "; ".join(notes) if notes else "no reranker model configured"


class RerankSaturated(Exception):
    """The rerank workers cannot answer within the budget (admission control): nothing was sent.
    `retry_after`: whole seconds until the work waiting now is expected to be done."""

    def __init__(self, retry_after: int):
        super().__init__(SATURATED)
        self.retry_after = retry_after


def retry_after_seconds(expected_wait: float) -> int:
    """Whole seconds a refused client should wait: the expected wait, at least 1."""
    return max(1, math.ceil(expected_wait))


def admit_share(share: Share, budget: float) -> Admission | None:
    """Admission control (RERANK_ADMISSION) for one share: cut its positions to the prefix that
    the model's workers can score and answer within `budget` seconds given the pairs already
    waiting for them (reranker/backlog.py, reranker/deadlines.py); the share gets the reason when
    none fits. None when admission control is off."""
    if not settings.RERANK_ADMISSION:
        return None
    speed = read_speed(share.model)
    waiting = read_backlog(share.model) if speed else None
    admission = admit(len(share.positions), budget, speed, waiting.pairs if waiting else 0,
                      waiting.processes if waiting else 1, settings.RERANK_ROUND_TRIP_SECONDS)
    decision = ("unknown_speed" if not speed else "saturated" if admission.saturated
                else "trimmed" if admission.pairs < admission.wanted else "sent")
    RERANK_ADMISSION.labels(decision).inc()
    if admission.saturated:
        share.reason, share.outcome = admission.reason, "saturated"
        del share.positions[:]  # nothing sent: no candidates
        log.info("not sent (%s): %d pairs waiting on %d process(es) at %.0f pairs/s, expected wait %.2f s, budget %g s",
                 share.model, waiting.pairs if waiting else 0, waiting.processes if waiting else 1, speed,
                 admission.expected_wait, budget)
    else:
        del share.positions[admission.pairs:]
    return admission


def send_and_wait(query: str, jobs: list[tuple[Share, list[str]]], budget: float) -> None:
    """Send each share's passages to the workers at once and wait at most `budget` seconds for
    all of them; each share gets its logits (for a prefix of its positions, when the worker cut
    the request at its deadline) or the reason it has none."""
    started = time.perf_counter()
    answer_by = time.time() + budget
    deadline = answer_by - settings.RERANK_ROUND_TRIP_SECONDS if settings.RERANK_ADMISSION else None
    pending = []
    for share, passages in jobs:
        task_id = str(uuid.uuid4())
        if deadline is not None:
            add_request(share.model, task_id, len(passages), deadline)
        try:
            # `expires`: a worker that takes the message after the budget drops it instead of
            # scoring for nobody (at least 1 s, for clocks of different hosts that disagree a
            # little); with admission control the worker also reads `deadline`, and `answer_by`
            # to count what it answers after the wait is over (reranker/tasks.py).
            # `retry=False`: a broker that is down fails now, not after retries.
            result = current_app.send_task(RERANK_TASK, args=[query, passages, share.sent_model],
                                           kwargs={"deadline": deadline, "answer_by": answer_by}
                                           if deadline is not None else {},
                                           task_id=task_id, queue=settings.RERANK_QUEUE,
                                           expires=max(budget, 1.0), retry=False)
        except Exception as exc:
            share.reason, share.outcome = f"the task broker is unreachable ({type(exc).__name__})", "broker"
            if deadline is not None:
                remove_request(share.model, task_id, len(passages))
            continue
        pending.append((share, result, len(passages)))
    for share, result, sent in pending:
        try:
            payload = wait_for(result, started + budget)
        except CeleryTimeout:
            if withdraw_request(result.id):
                share.outcome = "not_taken"
                share.reason = f"no rerank worker took the request within {budget:g} s (none is running, or all are busy)"
            else:
                share.outcome = "timeout"
                share.reason = f"the rerank worker did not answer within {budget:g} s"
            if deadline is not None:
                remove_request(share.model, result.id, sent)
        except Exception as exc:  # the task raised (model missing on the worker, ...)
            share.outcome = "failed"
            share.reason = f"the rerank worker failed: {type(exc).__name__}: {str(exc)[:300]}"
        else:
            logits = payload.get("logits") or []
            if payload.get("stopped") == "expired" or (not logits and payload.get("stopped") == "deadline"):
                share.outcome = "expired"
                share.reason = "the rerank worker took the request too late to score it within the budget"
            elif not logits or len(logits) > len(share.positions) or (
                    len(logits) < len(share.positions) and payload.get("stopped") != "deadline"):
                share.outcome = "failed"
                share.reason = f"the rerank worker returned {len(logits)} scores for {len(share.positions)} passages"
            else:
                del share.positions[len(logits):]  # cut at the deadline: the scored prefix
                share.reranked, share.logits, share.outcome = True, logits, "reranked"
                share.fusion = ModelFusion.from_dict(payload["fusion"]) if payload.get("fusion") else ModelFusion()
                share.runtime, share.precision = payload.get("runtime"), payload.get("precision")
        share.ms = (time.perf_counter() - started) * 1000


def rerank_hits(query: str, hits: list[Hit], collections: dict) -> RerankOutcome:
    """Ask the rerank workers for the logits of each model's share of the head (plan_shares),
    all at once, waiting at most RERANK_TIMEOUT for all of them; with admission control, each
    share first cut to what can come back in time, or not sent (admit_share)."""
    started = time.perf_counter()
    shares, reason = plan_shares(hits, collections)
    if reason:
        return _recorded(RerankOutcome(False, reason, kind="no_results" if not hits else "no_model"), started)
    budget = settings.RERANK_TIMEOUT
    jobs = []
    for share in shares:
        admit_share(share, budget)
        if not share.reason:
            jobs.append((share, [passage_text(hits[i]) for i in share.positions]))
    send_and_wait(query, jobs, budget)
    outcome = RerankOutcome(any(share.reranked for share in shares), shares=shares)
    for share in shares:
        if share.reason:
            log.warning("not reranked (%s, %d chunks): %s", share.model, len(share.positions), share.reason)
    if not outcome.reranked:
        reasons = list(dict.fromkeys(share.reason for share in shares))
        outcome.reason = reasons[0] if len(reasons) == 1 else "; ".join(reasons)
        kinds = {share.outcome for share in shares}
        outcome.kind = kinds.pop() if len(kinds) == 1 else "mixed"
    return _recorded(outcome, started)


def _recorded(outcome: RerankOutcome, started: float) -> RerankOutcome:
    outcome.ms = (time.perf_counter() - started) * 1000
    RERANK_SECONDS.labels(outcome.kind).observe(outcome.ms / 1000)
    RERANK_OUTCOMES.labels(outcome.kind).inc()
    return outcome


def rerank_passages(query: str, passages: list[str], model: str = "") -> Share:
    """Score `passages` for `query` with `model` (empty: the site's RERANKER_MODEL) under the same
    budget and admission rules as a search's rerank stage: the entry point for callers other than
    the search (an API that reranks texts it is given).

    Returns the Share: `logits` for the first len(logits) passages (a prefix, when the workers had
    time for only part; the rest keep their order), or `reason` (and `outcome`) when there are
    none. Raises RerankSaturated when admission control refuses the request (nothing sent): a
    caller answering HTTP maps it to 503 with `Retry-After: exc.retry_after`.
    """
    started = time.perf_counter()
    target = configured_model(model.strip())
    share = Share(model=target, sent_model=model.strip(), positions=list(range(len(passages))))
    if not target or not passages:
        share.reason = "no reranker model configured" if not target else "no passages to rerank"
        share.outcome = "no_model" if not target else "no_results"
        return share
    budget = settings.RERANK_TIMEOUT
    admission = admit_share(share, budget)
    if admission is not None and admission.saturated:
        _recorded(RerankOutcome(False, share.reason, kind="saturated", shares=[share]), started)
        raise RerankSaturated(retry_after_seconds(admission.expected_wait - budget))
    send_and_wait(query, [(share, list(passages[: len(share.positions)]))], budget)
    _recorded(RerankOutcome(share.reranked, share.reason, kind=share.outcome, shares=[share]), started)
    return share


def reorder_share(hits: list[Hit], positions: list[int], logits: list[float], fusion: Fusion = Fusion()) -> None:
    """Reorder, in place, the chunks at `positions` (ascending) among those same positions: by
    the model's fusion of its logits' order with the first stage's (reranker/fusion.py; weight
    0: by logit alone, ties in first-stage order). Other positions do not move."""
    chunks = [hits[i] for i in positions]
    for hit, logit in zip(chunks, logits):
        hit.reranker_logit = float(logit)
    for position, i in zip(positions, fusion.order(logits)):
        hits[position] = chunks[i]


def apply_shares(hits: list[Hit], outcome: RerankOutcome, mode: str) -> list[Hit]:
    """The list with each reranked share reordered within its own places."""
    hits = list(hits)
    for share in outcome.shares:
        if share.reranked:
            reorder_share(hits, share.positions, share.logits, share.fusion.for_mode(mode))
    return hits


def apply_logits(hits: list[Hit], logits: list[float], fusion: Fusion = Fusion()) -> list[Hit]:
    """One model's logits for the head (the first len(logits) chunks) applied: the head
    reordered, the rest unchanged."""
    hits = list(hits)
    reorder_share(hits, list(range(len(logits))), logits, fusion)
    return hits
