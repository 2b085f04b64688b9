"""GET /metrics: the site's metrics in Prometheus' text format, for the configured addresses and
for a request with the metrics token only (METRICS_ALLOWED_ADDRESSES, METRICS_TOKEN).

What it holds (each metric is described in docs/operating.md, "Metrics"):
- the web processes' own metrics (common/service_metrics.py): summed over every gunicorn process
  when PROMETHEUS_MULTIPROC_DIR is set (searchsite/gunicorn_conf.py), else this process's;
- read when scraped: the workers' shared counters (Redis), the Celery queues' lengths, the rerank
  backlog and the workers' speed per model (reranker/backlog.py, reranker/speed.py), and the
  documents and index builds by status (the database). A part that cannot be read is left out
  and counted in `metrics_scrape_errors_total{part=...}`, never a failed scrape.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import os

import redis
from django.conf import settings
from django.db.models import Count
from django.http import HttpResponse, HttpResponseForbidden
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from common.service_metrics import SHARED_COUNTERS, observe_search, read_shared

from .ratelimit import client_address

log = logging.getLogger(__name__)


def bearer_token_matches(request, token: str) -> bool:
    """The request carries `Authorization: Bearer <token>` (a configured, non-empty token)."""
    if not token:
        return False
    given = request.META.get("HTTP_AUTHORIZATION", "")
    return given.startswith("Bearer ") and hmac.compare_digest(given[len("Bearer "):].strip().encode(), token.encode())


def address_allowed(request) -> bool:
    address = request.META.get("REMOTE_ADDR", "")
    if settings.RATE_LIMIT_TRUSTED_PROXIES:
        address = client_address(request)  # the proxies' X-Forwarded-For entry (an IPv6 client: its /64)
    try:
        ip = ipaddress.ip_address(address.split("/")[0])
    except ValueError:
        return False
    for allowed in settings.METRICS_ALLOWED_ADDRESSES:
        try:
            if ip in ipaddress.ip_network(allowed, strict=False):
                return True
        except ValueError:
            log.warning("METRICS_ALLOWED_ADDRESSES: %r is not an address or a network", allowed)
    return False


class ScrapeTimeCollector:
    """What is read when Prometheus scrapes (the module docstring)."""

    def collect(self):
        errors = CounterMetricFamily("metrics_scrape_errors", "Parts of /metrics that could not be read "
                                     "in a scrape", labels=["part"])
        for part, read in (("shared_counters", self._shared), ("queues", self._queues),
                           ("rerankers", self._rerankers), ("database", self._database)):
            try:
                yield from read()
            except Exception as exc:  # a part that cannot be read leaves the others
                log.warning("metrics: %s unavailable: %s: %s", part, type(exc).__name__, exc)
                errors.add_metric([part], 1)
        yield errors

    def _shared(self):
        families = {name: {} for name in SHARED_COUNTERS}
        for name, labels, value in read_shared():
            families[name][tuple(sorted(labels.items()))] = value
        for name, samples in families.items():
            label_names = sorted({key for labels in samples for key, _ in labels})
            family = CounterMetricFamily(name, SHARED_COUNTERS[name], labels=label_names)
            for labels, value in samples.items():
                given = dict(labels)
                family.add_metric([given.get(key, "") for key in label_names], value)
            yield family

    def _queues(self):
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            family = GaugeMetricFamily("celery_queue_length", "Messages waiting in each Celery queue (Redis)",
                                       labels=["queue"])
            for queue in (settings.RERANK_QUEUE, settings.EMBED_QUEUE, settings.TRAIN_QUEUE):
                family.add_metric([queue], client.llen(f"{settings.CELERY_KEY_PREFIX}{queue}"))
            yield family
        finally:
            client.close()

    def _rerankers(self):
        from searchsite.health import reranker_models
        from reranker.backlog import read_backlog
        from reranker.speed import read_report

        speed = GaugeMetricFamily("rerank_worker_pairs_per_second", "Pairs per second of a rerank pool process, "
                                  "as the workers last measured it", labels=["model", "runtime", "precision"])
        pairs = GaugeMetricFamily("rerank_backlog_pairs", "Pairs asked of the model's workers and not answered "
                                  "yet (queued or being scored)", labels=["model"])
        processes = GaugeMetricFamily("rerank_processes", "Rerank pool processes that served the model in the "
                                      "last two minutes (at least 1)", labels=["model"])
        for model in reranker_models():
            report = read_report(model)
            if report and report.get("pairs_per_second"):
                speed.add_metric([model, str(report.get("runtime")), str(report.get("precision"))],
                                 float(report["pairs_per_second"]))
            backlog = read_backlog(model)
            if backlog is not None:
                pairs.add_metric([model], backlog.pairs)
                processes.add_metric([model], backlog.processes)
        yield from (speed, pairs, processes)

    def _database(self):
        from indexer.models import Document, IndexBuild

        documents = GaugeMetricFamily("documents", "Documents by indexing status", labels=["status"])
        for row in Document.objects.values("status").annotate(n=Count("pk")).order_by():
            documents.add_metric([row["status"]], row["n"])
        builds = GaugeMetricFamily("index_builds", "Index builds by status", labels=["status"])
        counts = dict(IndexBuild.objects.values_list("status").annotate(n=Count("pk")).order_by())
        for status in IndexBuild.Status.values:
            builds.add_metric([status], counts.get(status, 0))
        yield from (documents, builds)


def exposition() -> bytes:
    """Every metric in Prometheus' text format."""
    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(ScrapeTimeCollector())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        processes = CollectorRegistry()
        MultiProcessCollector(processes)
        own = generate_latest(processes)
    else:
        own = generate_latest(REGISTRY)
    return own + generate_latest(scraped)


@never_cache
@require_GET
def metrics(request):
    if not (address_allowed(request) or bearer_token_matches(request, settings.METRICS_TOKEN)):
        return HttpResponseForbidden("metrics are for the configured addresses (METRICS_ALLOWED_ADDRESSES) or a "
                                     "request with the metrics token (Authorization: Bearer ...)\n",
                                     content_type="text/plain")
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


def record_search(request, channel: str, params, answer: dict, elapsed_ms: float) -> None:
    """A search listener (search/search_hooks.py): its stages' times and how its rerank went."""
    rerank = answer["rerank"]
    observe_search(params.mode, answer["timings_ms"], "not_requested" if not rerank["requested"]
                   else "reranked" if rerank["applied"] else "not_reranked")
