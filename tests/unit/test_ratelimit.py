"""Rate limits (searchsite/ratelimit.py) without Redis: the "60/minute" syntax, the settings
that refuse bad values at start-up, which address a request is counted under, and which URLs
are limited."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.test import RequestFactory
from django.urls import resolve

from searchsite.ratelimit import LIMITED_URL_NAMES, Rate, client_address, parse_rate
from tests.support.workers import ROOT


@pytest.mark.parametrize("text, rate", [
    ("60/minute", Rate(60, 60)),
    ("60/min", Rate(60, 60)),
    ("1/s", Rate(1, 1)),
    ("300/hour", Rate(300, 3600)),
    ("5000/day", Rate(5000, 86400)),
    ("10/30s", Rate(10, 30)),
    ("10 / 2 minutes", Rate(10, 120)),
    (" 7/H ", Rate(7, 3600)),
])
def test_rates_parse(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text, words", [
    ("abc", "must look like 60/minute"),
    ("60", "must look like 60/minute"),
    ("60/fortnight", "must look like 60/minute"),
    ("-1/minute", "must look like 60/minute"),
    ("1.5/minute", "must look like 60/minute"),
    ("", "must look like 60/minute"),
    ("0/minute", "at least 1 request"),
    ("5/0s", "at least 1 request"),
])
def test_bad_rates_are_refused_with_what_is_accepted(text, words):
    with pytest.raises(ValueError, match=words):
        parse_rate(text)


def test_rates_read_as_words():
    assert str(Rate(60, 60)) == "60 per minute"
    assert str(Rate(3, 86400)) == "3 per day"
    assert str(Rate(10, 30)) == "10 per 30 s"


@pytest.mark.parametrize("variable, value, words", [
    ("SEARCH_RATE_LIMIT", "lots", "SEARCH_RATE_LIMIT must look like 60/minute"),
    ("SEARCH_RATE_LIMIT_USER", "0/minute", "SEARCH_RATE_LIMIT_USER needs at least 1 request"),
    ("SEARCH_RATE_LIMIT_ENABLED", "maybe", "SEARCH_RATE_LIMIT_ENABLED must be true or false"),
    ("RATE_LIMIT_TRUSTED_PROXIES", "-1", "RATE_LIMIT_TRUSTED_PROXIES must be 0 or more"),
    ("RATE_LIMIT_TRUSTED_PROXIES", "two", "RATE_LIMIT_TRUSTED_PROXIES must be an integer"),
    ("RATE_LIMIT_REDIS_TIMEOUT", "0", "RATE_LIMIT_REDIS_TIMEOUT must be a positive number"),
])
def test_bad_settings_stop_the_start(variable, value, words):
    env = {**os.environ, variable: value}
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and words in result.stderr, result.stderr[-2000:]


def test_defaults():
    from django.conf import settings

    assert parse_rate(settings.SEARCH_RATE_LIMIT) == Rate(60, 60)
    assert parse_rate(settings.SEARCH_RATE_LIMIT_USER) == Rate(300, 60)
    assert settings.RATE_LIMIT_KEY_PREFIX.startswith(settings.CELERY_KEY_PREFIX)


def test_the_search_page_and_the_api_are_the_limited_urls():
    """The limiter matches URL names: if the views move and are renamed, this fails instead of
    the limits silently applying to nothing."""
    assert {resolve("/").url_name: "page", resolve("/api/search").url_name: "api",
            resolve("/api/rerank").url_name: "api"} == LIMITED_URL_NAMES
    assert resolve("/healthz").url_name not in LIMITED_URL_NAMES


def address(settings, proxies: int, remote: str, forwarded: str | None = None) -> str:
    settings.RATE_LIMIT_TRUSTED_PROXIES = proxies
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return client_address(RequestFactory().get("/api/search", **extra))


def test_without_trusted_proxies_the_forwarded_header_is_ignored(settings):
    assert address(settings, 0, "198.51.100.7") == "198.51.100.7"
    assert address(settings, 0, "198.51.100.7", "203.0.113.9") == "198.51.100.7"


def test_trusted_proxies_name_the_entry_they_wrote(settings):
    # client -> proxy A -> proxy B -> us: B (REMOTE_ADDR) appended A's address, A the client's.
    assert address(settings, 1, "10.0.0.2", "203.0.113.9") == "203.0.113.9"
    assert address(settings, 1, "10.0.0.2", "6.6.6.6, 203.0.113.9") == "203.0.113.9"  # 6.6.6.6: spoofed by the client
    assert address(settings, 2, "10.0.0.2", "6.6.6.6, 203.0.113.9, 10.0.0.1") == "203.0.113.9"
    # Fewer entries than proxies: not through all of them; the connection's address counts.
    assert address(settings, 2, "10.0.0.2", "203.0.113.9") == "10.0.0.2"
    assert address(settings, 1, "10.0.0.2") == "10.0.0.2"


def test_an_ipv6_client_is_counted_by_its_64():
    settings_free = RequestFactory()
    one = client_address(settings_free.get("/", REMOTE_ADDR="2001:db8:1:2:aaaa::1"))
    other = client_address(settings_free.get("/", REMOTE_ADDR="2001:db8:1:2:bbbb::9"))
    neighbour = client_address(settings_free.get("/", REMOTE_ADDR="2001:db8:1:3::1"))
    assert one == other == "2001:db8:1:2::/64" != neighbour
    assert client_address(settings_free.get("/", REMOTE_ADDR="::ffff:198.51.100.7")) == "198.51.100.7"
