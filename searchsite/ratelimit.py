"""Rate limits of the searches: each one costs an embedding, an Elasticsearch query
and a rerank task, so every client gets a bounded number of them per window.

- **What counts**: requests to the search page and the JSON API (URL names in `LIMITED_URL_NAMES`,
  matched after URL resolution, so the limit follows the views wherever they live) that carry
  a `q` parameter, i.e. ask for a search, and each POST /api/rerank. The empty search form and
  `/healthz` never count.
- **Who**: an API key by key (api/middleware.py) and a signed-in user by user id, with
  `SEARCH_RATE_LIMIT_USER` (people behind one address, a NAT or an office, do not share it);
  anyone else by client address with
  `SEARCH_RATE_LIMIT` (`REMOTE_ADDR`, or the `X-Forwarded-For` entry written by the nearest of
  `RATE_LIMIT_TRUSTED_PROXIES` proxies; an IPv6 client by its /64, which one client owns
  whole). Staff are counted like any user: `evaluate` and `train_reranker` search in-process,
  not over HTTP, so no staff tool needs more, and an exemption would make a stolen staff
  session an unlimited one.
- **Counted in Redis**, shared by every web process: a fixed window that opens at a client's
  first counted request (`SET key 0 PX window NX`, `INCR`, `PTTL` in one MULTI transaction, so
  a key never outlives its window: the expiry is set with the key, atomically). Over the limit:
  429 with `Retry-After` (seconds until that client's window closes) and a message, JSON
  `{"error": ...}` for the API, a page for the search page.
- **Redis down or slow** (`RATE_LIMIT_REDIS_TIMEOUT`): the search goes through unlimited (a
  limiter that fails closed would turn a Redis outage into a search outage); a warning is
  logged at most once a minute per web process, and Redis is not asked again for a few
  seconds, so a black-holed Redis costs one timeout per few seconds, not one per request.
"""
from __future__ import annotations

import ipaddress
import logging
import math
import re
import threading
import time
from functools import lru_cache
from typing import NamedTuple

import redis
from django.conf import settings

from common.service_metrics import SEARCHES_RATE_LIMITED

logger = logging.getLogger(__name__)

# URL names (not paths, not view functions) of the limited views: the search page and the API.
LIMITED_URL_NAMES = {"search": "page", "api_search": "api", "api_rerank": "api"}

# After a Redis error, requests go through without asking Redis for this long (seconds).
REDIS_RETRY_SECONDS = 5.0
# At most one "Redis is unreachable" warning per web process in this many seconds.
WARNING_INTERVAL_SECONDS = 60.0

_UNITS = {"s": 1, "sec": 1, "second": 1, "seconds": 1,
          "m": 60, "min": 60, "minute": 60, "minutes": 60,
          "h": 3600, "hour": 3600, "hours": 3600,
          "d": 86400, "day": 86400, "days": 86400}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*")


class Rate(NamedTuple):
    """At most `requests` counted requests per window of `seconds`."""
    requests: int
    seconds: int

    def __str__(self) -> str:
        for name, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
            if self.seconds == length:
                return f"{self.requests} per {name}"
        return f"{self.requests} per {self.seconds} s"


@lru_cache(maxsize=64)
def parse_rate(text: str) -> Rate:
    """'60/minute', '300/hour', '10/30s' (10 per 30 seconds): a Rate; anything else raises
    ValueError saying what is accepted."""
    match = _RATE.fullmatch(str(text).lower())
    unit = match and _UNITS.get(match.group(3))
    if not match or unit is None:
        raise ValueError(f"must look like 60/minute (requests per second, minute, hour or day, or per N of "
                         f"them: 10/30s), not {text!r}")
    requests, count = int(match.group(1)), int(match.group(2) or 1)
    if requests < 1 or count < 1:
        raise ValueError(f"needs at least 1 request per window of at least 1 second, not {text!r}")
    return Rate(requests, count * unit)


def client_address(request) -> str:
    """The client's address: REMOTE_ADDR, or with N trusted proxies in front the N-th
    X-Forwarded-For entry from the right (the one the outermost trusted proxy wrote; entries
    left of it are whatever the client sent). Fewer entries than proxies: REMOTE_ADDR."""
    address = request.META.get("REMOTE_ADDR", "")
    proxies = settings.RATE_LIMIT_TRUSTED_PROXIES
    if proxies:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= proxies:
            address = forwarded[-proxies]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        # A trusted proxy wrote something that is no address: count it as written (bounded).
        return address[:64] or "unknown"
    if ip.version == 6:
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class Refusal(NamedTuple):
    rate: Rate
    who: str  # "address" or "user"
    retry_after: int  # seconds


class RateLimitMiddleware:
    """Counts the searches of each client in Redis and answers 429 past the limit (see the
    module docstring). State here is per web process: the Redis connection pools and when
    Redis last failed."""

    def __init__(self, get_response):
        self.get_response = get_response
        self._clients: dict[tuple, redis.Redis] = {}
        self._lock = threading.Lock()
        self._redis_failed_at = -math.inf
        self._warned_at = -math.inf

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        kind = LIMITED_URL_NAMES.get(getattr(request.resolver_match, "url_name", None))
        # A search asks with `q`; a rerank (POST /api/rerank) with its body.
        if kind is None or not settings.SEARCH_RATE_LIMIT_ENABLED or ("q" not in request.GET and request.method != "POST"):
            return None
        refusal = self.check(request)
        if refusal is None:
            return None
        SEARCHES_RATE_LIMITED.labels(kind, refusal.who).inc()
        return too_many_requests(request, kind, refusal)

    def check(self, request) -> Refusal | None:
        """Counts this request; a Refusal when it is over its client's limit, None otherwise
        (also when Redis cannot be asked)."""
        user = getattr(request, "user", None)
        # An API key (set by api/middleware.py) is counted as one client, at the users' rate.
        api_key_id = getattr(request, "api_key_id", None)
        if api_key_id is not None:
            rate, who, key = parse_rate(settings.SEARCH_RATE_LIMIT_USER), "key", f"apikey:{api_key_id}"
        elif user is not None and user.is_authenticated:
            rate, who, key = parse_rate(settings.SEARCH_RATE_LIMIT_USER), "user", f"user:{user.pk}"
        else:
            rate, who, key = parse_rate(settings.SEARCH_RATE_LIMIT), "address", f"addr:{client_address(request)}"
        if time.monotonic() - self._redis_failed_at < REDIS_RETRY_SECONDS:
            return None
        # The rate is part of the key: after a change of limit, no window of the old length lingers.
        key = f"{settings.RATE_LIMIT_KEY_PREFIX}{rate.requests}/{rate.seconds}:{key}"
        try:
            pipe = self._redis().pipeline(transaction=True)
            pipe.set(key, 0, px=rate.seconds * 1000, nx=True)
            pipe.incr(key)
            pipe.pttl(key)
            _, count, pttl = pipe.execute()
        except redis.RedisError as exc:
            self._redis_down(exc)
            return None
        if count <= rate.requests:
            return None
        return Refusal(rate, who, max(1, math.ceil((pttl if pttl > 0 else rate.seconds * 1000) / 1000)))

    def _redis(self) -> redis.Redis:
        config = (settings.RATE_LIMIT_REDIS_URL, settings.RATE_LIMIT_REDIS_TIMEOUT)
        with self._lock:
            client = self._clients.get(config)
            if client is None:
                client = self._clients[config] = redis.Redis.from_url(
                    config[0], socket_connect_timeout=config[1], socket_timeout=config[1])
            return client

    def _redis_down(self, exc: Exception) -> None:
        now = time.monotonic()
        self._redis_failed_at = now
        if now - self._warned_at >= WARNING_INTERVAL_SECONDS:
            self._warned_at = now
            logger.warning("rate limits are off: Redis at %s did not answer (%s: %s); searches go through "
                           "unlimited, Redis is asked again in %.0f s (this warning at most once a minute)",
                           redact(settings.RATE_LIMIT_REDIS_URL), type(exc).__name__, exc, REDIS_RETRY_SECONDS)


def redact(url: str) -> str:
    """A Redis URL without its password, for logs."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


def too_many_requests(request, kind: str, refusal: Refusal):
    from django.http import JsonResponse
    from django.shortcuts import render
    from django.utils.cache import add_never_cache_headers

    whose = {"user": "signed-in user", "key": "API key"}.get(refusal.who, "address")
    message = (f"too many searches: at most {refusal.rate} from one {whose}; "
               f"try again in {refusal.retry_after} s")
    if kind == "api":
        response = JsonResponse({"error": message}, status=429)
    else:
        response = render(request, "searchsite/429.html",
                          {"message": message, "retry_after": refusal.retry_after}, status=429)
    response["Retry-After"] = str(refusal.retry_after)
    add_never_cache_headers(response)
    return response
