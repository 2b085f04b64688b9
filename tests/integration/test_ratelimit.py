"""Rate limits of the search page and the API (searchsite/ratelimit.py) with the real Redis,
Elasticsearch and search: over the limit 429 with Retry-After and a message; counters per
address, per signed-in user, shared by web processes; Redis unreachable or silent: searches
still answer."""
from __future__ import annotations

import logging
import socket
import threading
import time

import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client

from indexer.models import Collection
from tests.support.searching import add_documents, drop_collections, index_now

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def corpus(es, django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        col = Collection.objects.create(name="Limits", slug="limits", visibility=Collection.Visibility.PUBLIC)
        add_documents(col, [("t1", "Telomerase", "Telomerase keeps telomeres long in stem cells.", {}),
                            ("t2", "Insulin", "Insulin triggers glucose uptake in muscle.", {})])
        index_now(es, col)
        yield col
        drop_collections(es, col)


@pytest.fixture
def limits(settings, corpus):
    """Small limits; no reranker (not what these tests are about), keyword mode in the requests."""
    settings.SEARCH_RATE_LIMIT_ENABLED = True
    settings.SEARCH_RATE_LIMIT = "3/minute"
    settings.SEARCH_RATE_LIMIT_USER = "5/minute"
    settings.RATE_LIMIT_TRUSTED_PROXIES = 0
    settings.RERANKER_MODEL = ""
    return settings


def search(client, address: str, path: str = "/api/search", **headers):
    return client.get(path, {"q": "telomerase", "mode": "keyword", "collection": "limits"},
                      REMOTE_ADDR=address, **headers)


def test_the_api_answers_429_with_retry_after_and_a_json_message(limits, client):
    for _ in range(3):
        assert search(client, "10.15.0.1").status_code == 200
    refused = search(client, "10.15.0.1")
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "no-store" in refused["Cache-Control"]
    assert refused.json() == {"error": "too many searches: at most 3 per minute from one address; "
                                       f"try again in {refused['Retry-After']} s"}
    # Another address has its own count.
    assert search(client, "10.15.0.2").status_code == 200
    # What does not search is not limited: health, the empty form, an API call without a query.
    assert client.get("/healthz", REMOTE_ADDR="10.15.0.1").status_code in (200, 503)
    assert client.get("/", REMOTE_ADDR="10.15.0.1").status_code == 200
    assert client.get("/api/search", REMOTE_ADDR="10.15.0.1").status_code == 400


def test_the_page_answers_429_with_a_page(limits, client):
    for _ in range(3):
        page = search(client, "10.15.1.1", path="/")
        assert page.status_code == 200 and b"Telomerase" in page.content
    refused = search(client, "10.15.1.1", path="/")
    assert refused.status_code == 429
    assert refused["Content-Type"].startswith("text/html")
    seconds = int(refused["Retry-After"])
    assert 1 <= seconds <= 60
    html = refused.content.decode()
    assert "<h1>Too many searches</h1>" in html and 'role="alert"' in html
    assert f"Too many searches: at most 3 per minute from one address; try again in {seconds} s." in html
    # The page and the API count together: one budget of searches per client.
    assert search(client, "10.15.1.1").status_code == 429


def test_a_signed_in_user_is_counted_by_user(limits, client):
    user = User.objects.create_user("limited", password="x" * 12)
    client.force_login(user)
    for n in range(5):  # the user limit, beyond the address limit of 3
        assert search(client, "10.15.2.1" if n % 2 else "10.15.2.2").status_code == 200
    refused = search(client, "10.15.2.3")  # a new address does not reset a user's count
    assert refused.status_code == 429
    assert "at most 5 per minute from one signed-in user" in refused.json()["error"]
    # Anonymous searches from the user's address have their own count.
    assert search(Client(), "10.15.2.1").status_code == 200


def test_two_web_processes_share_the_counter(limits):
    # Two clients, two middleware instances with their own Redis connections: what two web
    # processes are, as far as the counter goes.
    first, second = Client(), Client()
    assert search(first, "10.15.3.1").status_code == 200
    assert search(second, "10.15.3.1").status_code == 200
    assert search(first, "10.15.3.1").status_code == 200
    assert search(second, "10.15.3.1").status_code == 429
    assert search(first, "10.15.3.1").status_code == 429


def test_the_window_closes_after_its_length(limits, client):
    limits.SEARCH_RATE_LIMIT = "1/second"
    assert search(client, "10.15.4.1").status_code == 200
    refused = search(client, "10.15.4.1")
    assert refused.status_code == 429 and refused["Retry-After"] == "1"
    time.sleep(1.2)
    assert search(client, "10.15.4.1").status_code == 200


def test_forwarded_addresses_count_only_behind_trusted_proxies(limits, client):
    limits.SEARCH_RATE_LIMIT = "1/minute"
    # No trusted proxy: a client cannot escape its count by sending X-Forwarded-For.
    assert search(client, "10.15.5.1", HTTP_X_FORWARDED_FOR="203.0.113.1").status_code == 200
    assert search(client, "10.15.5.1", HTTP_X_FORWARDED_FOR="203.0.113.2").status_code == 429
    # One trusted proxy (10.15.5.9): the clients behind it are counted apart.
    limits.RATE_LIMIT_TRUSTED_PROXIES = 1
    assert search(client, "10.15.5.9", HTTP_X_FORWARDED_FOR="203.0.113.3").status_code == 200
    assert search(client, "10.15.5.9", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.3").status_code == 429
    assert search(client, "10.15.5.9", HTTP_X_FORWARDED_FOR="203.0.113.4").status_code == 200


def test_every_counter_expires(limits, client):
    search(client, "10.15.6.1")
    keys = list(redis.Redis.from_url(limits.RATE_LIMIT_REDIS_URL).scan_iter(f"{limits.RATE_LIMIT_KEY_PREFIX}*"))
    assert keys
    server = redis.Redis.from_url(limits.RATE_LIMIT_REDIS_URL)
    assert all(0 < server.pttl(key) <= 60_000 for key in keys)


def test_disabled_limits_count_nothing(limits, client):
    limits.SEARCH_RATE_LIMIT = "1/minute"
    limits.SEARCH_RATE_LIMIT_ENABLED = False
    assert [search(client, "10.15.7.1").status_code for _ in range(3)] == [200, 200, 200]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redis_unreachable_lets_searches_through_with_one_warning(limits, client, caplog):
    limits.SEARCH_RATE_LIMIT = "1/minute"
    limits.RATE_LIMIT_REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    with caplog.at_level(logging.WARNING, logger="searchsite.ratelimit"):
        statuses = [search(client, "10.15.8.1").status_code for _ in range(3)]
        statuses.append(search(client, "10.15.8.1", path="/").status_code)
    assert statuses == [200, 200, 200, 200]
    warnings = [r.getMessage() for r in caplog.records if r.name == "searchsite.ratelimit"]
    assert len(warnings) == 1 and "rate limits are off" in warnings[0] and "ConnectionError" in warnings[0], warnings


def test_redis_that_never_answers_costs_one_short_wait(limits, client, caplog):
    """A server that accepts the connection and says nothing (a hung Redis): the first search
    waits RATE_LIMIT_REDIS_TIMEOUT, then answers; the next ones do not wait for it again."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # the kernel completes the handshakes; nothing ever reads or answers
    accepted = []
    stop = threading.Event()

    def accept():  # keep the connections open, silent
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        limits.SEARCH_RATE_LIMIT = "1/minute"
        limits.RATE_LIMIT_REDIS_TIMEOUT = 0.5
        limits.RATE_LIMIT_REDIS_URL = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
        with caplog.at_level(logging.WARNING, logger="searchsite.ratelimit"):
            assert search(client, "10.15.9.1").status_code == 200
            accepted_after_first = len(accepted)
            assert [search(client, "10.15.9.1").status_code for _ in range(2)] == [200, 200]
        assert accepted_after_first >= 1
        assert len(accepted) == accepted_after_first  # not asked again within REDIS_RETRY_SECONDS
        warnings = [r.getMessage() for r in caplog.records if r.name == "searchsite.ratelimit"]
        assert len(warnings) == 1 and "TimeoutError" in warnings[0], warnings
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()
