"""Who may read /metrics (searchsite/metrics.py), and what it serves when Redis and the database
cannot be read (the parts left out and counted, never a failed scrape). Through a real
gunicorn and Prometheus: tests/integration/test_metrics.py."""
from __future__ import annotations

from django.test import RequestFactory

from searchsite.metrics import ScrapeTimeCollector, address_allowed, bearer_token_matches, metrics


def request(address: str = "127.0.0.1", authorization: str | None = None, forwarded: str | None = None):
    extra = {"REMOTE_ADDR": address}
    if authorization:
        extra["HTTP_AUTHORIZATION"] = authorization
    if forwarded:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/metrics", **extra)


def test_addresses_and_networks(settings):
    settings.METRICS_ALLOWED_ADDRESSES = ["127.0.0.1", "10.1.0.0/16", "::1"]
    assert address_allowed(request("127.0.0.1")) and address_allowed(request("10.1.200.3"))
    assert address_allowed(request("::1"))
    assert not address_allowed(request("10.2.0.1")) and not address_allowed(request("192.0.2.7"))
    # A client cannot claim an allowed address through X-Forwarded-For unless a trusted proxy wrote it.
    settings.RATE_LIMIT_TRUSTED_PROXIES = 0
    assert not address_allowed(request("192.0.2.7", forwarded="127.0.0.1"))
    settings.RATE_LIMIT_TRUSTED_PROXIES = 1
    assert address_allowed(request("192.0.2.7", forwarded="10.1.0.9"))


def test_token(settings):
    assert not bearer_token_matches(request(authorization="Bearer "), "")  # no token configured: never
    assert bearer_token_matches(request(authorization="Bearer s3cret"), "s3cret")
    assert not bearer_token_matches(request(authorization="Bearer s3cre"), "s3cret")
    assert not bearer_token_matches(request(authorization="Basic s3cret"), "s3cret")


def test_the_view_refuses_strangers_and_serves_the_text_format(settings):
    settings.METRICS_ALLOWED_ADDRESSES, settings.METRICS_TOKEN = ["127.0.0.1"], "tok"
    refused = metrics(request("192.0.2.7"))
    assert refused.status_code == 403 and b"METRICS_ALLOWED_ADDRESSES" in refused.content
    served = metrics(request("192.0.2.7", authorization="Bearer tok"))
    assert served.status_code == 200 and served["Content-Type"].startswith("text/plain")
    assert b"# TYPE search_stage_seconds histogram" in served.content


def test_unreadable_parts_are_counted_not_fatal(settings):
    # Redis at a port nothing listens on (make test runs the unit tests with the real Redis up);
    # the database is not open to this test.
    settings.REDIS_URL = settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    families = {family.name: family for family in ScrapeTimeCollector().collect()}
    errors = {sample.labels["part"] for sample in families["metrics_scrape_errors"].samples}
    assert {"shared_counters", "queues"} <= errors
