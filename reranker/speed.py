"""How fast a reranker model scores pairs, and on what, as reported by the workers that serve it.

The rerank depth of a search adapts to it (search/rerank_client.py): a worker measures its pairs
per second when it loads a model (full-length pairs, the slow case) and refreshes the figure
with every request it serves (an exponential moving average); the web processes read it from
the shared cache (Redis) to decide how many candidates fit in RERANK_TARGET_SECONDS, and
/healthz shows the runtime each model runs on. Several workers serving one model share one
report (the latest).
"""
from __future__ import annotations

import logging
import time

from django.core.cache import caches

from .scorers import pairs_per_second

log = logging.getLogger(__name__)

# Weight of the newest request in the moving average.
SMOOTHING = 0.2
# A figure not refreshed for this long is dropped (the worker that measured it may be gone).
TTL_SECONDS = 24 * 3600
CALIBRATION_PAIRS = 16


def _key(model_id: str) -> str:
    return f"rerank-speed:{model_id}"


def read_report(model_id: str) -> dict | None:
    """The workers' report on `model_id` (pairs_per_second, runtime, precision, device,
    max_length, fallback_reason, worker), or None when none is known (or Redis is down)."""
    try:
        value = caches["search"].get(_key(model_id))
    except Exception as exc:
        log.warning("rerank speed unavailable: %s", exc)
        return None
    return value if isinstance(value, dict) else None


def read_speed(model_id: str) -> float | None:
    """Pairs per second of `model_id` on the workers, or None when unknown."""
    report = read_report(model_id)
    return float(report["pairs_per_second"]) if report and report.get("pairs_per_second") else None


def write_speed(reranker, pairs_per_second: float, worker: str = "", smooth: bool = True) -> float:
    """Store a worker's measurement for a loaded reranker (reranker.cross_encoder.Reranker);
    returns the figure stored (smoothed with the previous one unless `smooth` is False)."""
    try:
        cache = caches["search"]
        previous = read_speed(reranker.model_id) if smooth else None
        value = pairs_per_second if not previous else (1 - SMOOTHING) * previous + SMOOTHING * pairs_per_second
        cache.set(_key(reranker.model_id), {**reranker.describe(), "pairs_per_second": round(value, 2),
                                            "worker": worker}, TTL_SECONDS)
        return value
    except Exception as exc:
        log.warning("rerank speed not stored: %s", exc)
        return pairs_per_second


def measure_speed(reranker) -> float:
    """Pairs per second of a loaded reranker (reranker.cross_encoder.Reranker) on full-length
    pairs (reranker/scorers.py:pairs_per_second)."""
    return pairs_per_second(reranker.scorer, CALIBRATION_PAIRS)
