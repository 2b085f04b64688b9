"""Health checks behind /healthz: each returns a dict with `ok` and never raises."""
from __future__ import annotations

import time

import redis
from django.conf import settings
from django.db import connection

from indexer.store import get_store


def _timed(check):
    started = time.monotonic()
    try:
        result = check()
    except Exception as exc:  # a health check reports every failure instead of raising
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


def check_database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"ok": True, "vendor": connection.vendor}


def check_search_engine() -> dict:
    """The engine of SEARCH_ENGINE (indexer/store.py): its name, cluster health and version."""
    store = get_store()
    health = store.health(settings.HEALTH_TIMEOUT)
    result = {
        "ok": health.ok,
        "engine": store.engine,
        "url": store.url,
        "cluster": health.name,
        "status": health.status,
        "version": ", ".join(health.versions),
    }
    if not health.ok:
        result["error"] = f"cluster health is {health.status}"
    return result


def check_redis() -> dict:
    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=settings.HEALTH_TIMEOUT,
        socket_connect_timeout=settings.HEALTH_TIMEOUT,
    )
    client.ping()
    return {"ok": True, "version": client.info("server")["redis_version"]}


def check_workers() -> dict:
    """Ping the workers and report which queues have at least one consumer."""
    from searchsite.celery import app

    replies = app.control.inspect(timeout=settings.HEALTH_TIMEOUT).active_queues() or {}
    queues = {settings.EMBED_QUEUE: [], settings.RERANK_QUEUE: []}
    for worker, consumed in replies.items():
        for queue in consumed:
            queues.setdefault(queue["name"], []).append(worker)
    per_queue = {}
    for name in (settings.EMBED_QUEUE, settings.RERANK_QUEUE):
        workers = sorted(queues[name])
        entry = {"ok": bool(workers), "workers": workers}
        if not workers:
            entry["error"] = f"no worker answered a ping on queue {name!r}"
        per_queue[name] = entry
    result = {"ok": all(q["ok"] for q in per_queue.values()), "queues": per_queue}
    if not result["ok"]:
        result["error"] = "; ".join(q["error"] for q in per_queue.values() if not q["ok"])
    return result


def reranker_models() -> list[str]:
    """The rerankers in use: the site's RERANKER_MODEL and the collections' own, once each."""
    from indexer.models import Collection

    models = [(settings.RERANKER_MODEL or "").strip(),
              *Collection.objects.exclude(reranker_model="").values_list("reranker_model", flat=True)]
    return list(dict.fromkeys(m.strip() for m in models if m and m.strip()))


def reranker_reports() -> dict:
    """What the rerank workers reported about each reranker in use (reranker/speed.py): runtime,
    precision, device, pairs per second. Information only: it does not decide health."""
    from reranker.speed import read_report

    return {model: read_report(model) or {"runtime": None, "note": "no rerank worker has loaded it yet"}
            for model in reranker_models()}


def run_checks() -> tuple[bool, dict]:
    checks = {
        "database": _timed(check_database),
        # Named by the engine (`elasticsearch` or `opensearch`), as `down` lists it.
        settings.SEARCH_ENGINE: _timed(check_search_engine),
        "redis": _timed(check_redis),
    }
    if checks["redis"]["ok"]:
        checks["workers"] = _timed(check_workers)
        if checks["database"]["ok"]:
            try:
                checks["workers"]["rerankers"] = reranker_reports()
            except Exception as exc:  # information only: never turns health into an error
                checks["workers"]["rerankers"] = {"error": f"{type(exc).__name__}: {exc}"}
    else:
        checks["workers"] = {"ok": False, "error": "cannot ping workers: the broker (Redis) is down"}
    healthy = all(c["ok"] for c in checks.values())
    return healthy, checks
