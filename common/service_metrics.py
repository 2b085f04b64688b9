"""What the site counts and times for an operator, scraped at /metrics (searchsite/metrics.py;
every metric is described in docs/operating.md, "Metrics").

Two kinds, by where the work happens:

- **In the web processes**: prometheus_client metrics, defined here once. Under gunicorn each
  worker process is its own interpreter, so with PROMETHEUS_MULTIPROC_DIR set (the Procfile, the
  image and the bench set it, and empty it at start: searchsite/gunicorn_conf.py) each process
  writes its samples to files there and /metrics sums them over the processes, live and gone.
  Without it (runserver, tests in one process) they live in this process.
- **In the Celery workers** (rerank requests dropped, cut or late, pairs scored, documents and
  chunks indexed, failures): counters in a Redis hash shared by every worker on every host
  (`count_shared`), which /metrics reads when scraped. A worker may run on another machine than
  the web server: a file folder would not reach it, Redis does.
"""
from __future__ import annotations

import json
import logging

import redis
from django.conf import settings
from prometheus_client import Counter, Gauge, Histogram

from .quick_redis import quick_redis

log = logging.getLogger(__name__)

# Seconds: from a few ms (a cached page, a quick 503) to past RERANK_TIMEOUT and the bench's targets.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0, 20.0)

SEARCH_STAGE_SECONDS = Histogram(
    "search_stage_seconds", "Time of each stage of a search (embed, engine, rerank) and of the whole (total)",
    ["stage", "mode"], buckets=LATENCY_BUCKETS)
SEARCH_ANSWERS = Counter(
    "search_answers", "Searches answered, by mode and whether their list was reranked (or why not)",
    ["mode", "rerank"])
RERANK_SECONDS = Histogram(
    "rerank_seconds", "Time the web process spent on the rerank stage of a search, by outcome",
    ["outcome"], buckets=LATENCY_BUCKETS)
RERANK_OUTCOMES = Counter(
    "rerank_outcomes", "Rerank stages by outcome: reranked, or the kind of reason it was not", ["outcome"])
RERANK_ADMISSION = Counter(
    "rerank_admission", "Admission decisions per model share: sent whole, trimmed to what fits, refused "
    "(saturated), or sent without a measured speed", ["decision"])
SEARCHES_IN_FLIGHT = Gauge(
    "searches_in_flight", "Searches in progress in the web processes", multiprocess_mode="livesum")
SEARCHES_REJECTED = Counter(
    "searches_rejected", "Searches answered 503 at once because their web process had SEARCH_MAX_IN_FLIGHT "
    "in progress", ["kind"])
SEARCHES_RATE_LIMITED = Counter(
    "searches_rate_limited", "Searches answered 429 by the rate limit, by page and who was counted", ["kind", "who"])


# --------------------------------------------------------------------------- shared counters

def shared_counters_key() -> str:
    return f"{settings.CELERY_KEY_PREFIX}metrics:counters"


# The counters workers keep, with their help text (the only names count_shared takes).
SHARED_COUNTERS = {
    "rerank_worker_requests": "Rerank requests taken by a worker, by outcome: scored whole, cut at the deadline "
                              "(deadline), dropped unscored because taken after it (expired), answered after "
                              "it but while the web process still waited (overran), or after the web process "
                              "stopped waiting (late: scored for nobody)",
    "rerank_worker_pairs": "(query, passage) pairs scored by the rerank workers",
    "indexing_documents": "Documents indexed (outcome=indexed) or given up on (outcome=failed) by the embed workers",
    "indexing_chunks": "Chunks written to the engine by the embed workers",
}


def count_shared(name: str, amount: int = 1, **labels: str) -> None:
    """Add `amount` to a shared counter (SHARED_COUNTERS); never raises (Redis down: not counted)."""
    name = name.removesuffix("_total")
    if name not in SHARED_COUNTERS:
        raise ValueError(f"unknown shared counter {name!r}: one of {', '.join(SHARED_COUNTERS)}")
    if amount <= 0:
        return
    field = json.dumps([name, sorted(labels.items())])
    try:
        quick_redis().hincrby(shared_counters_key(), field, amount)
    except redis.RedisError as exc:
        log.warning("metric %s not counted: %s", name, exc)


def read_shared() -> list[tuple[str, dict[str, str], int]]:
    """Every shared counter as (name, labels, value); Redis errors are raised to the caller."""
    counters = []
    for field, value in quick_redis().hgetall(shared_counters_key()).items():
        try:
            name, labels = json.loads(field)
        except ValueError:
            continue
        if name in SHARED_COUNTERS:
            counters.append((name, dict(labels), int(value)))
    return counters


# The answer's timings (search/results.py timings_ms) by the stage names of the histogram.
STAGES = {"embed": "embed", "elasticsearch": "engine", "rerank": "rerank", "total": "total"}


def observe_search(mode: str, timings_ms: dict[str, float], rerank: str) -> None:
    """One search answered: its stages' times (a stage it skipped, 0 ms, is not observed) and
    whether its list was reranked (`rerank`: reranked, not_reranked or not_requested)."""
    for key, stage in STAGES.items():
        ms = timings_ms.get(key)
        if ms or stage == "total":
            SEARCH_STAGE_SECONDS.labels(stage, mode).observe((ms or 0.0) / 1000)
    SEARCH_ANSWERS.labels(mode, rerank).inc()
