"""Load: C clients for T seconds against the real web stack, rerank on, with admission control on
and off, then a burst of many clients. Not a test: it prints numbers.

    .venv/bin/python bench/load.py [--clients 50] [--seconds 60] [--burst-clients 200] [--burst-seconds 30]
                                   [--web-workers 4] [--web-threads 8] [--web-server gthread|gevent|uvicorn]
                                   [--json out.json]
    .venv/bin/python bench/load.py --url http://127.0.0.1:8000 ...   # a stack that is already running

Without --url it starts, on a free loopback port, what production runs: gunicorn (`--web-workers`
processes × `--web-threads` threads, DJANGO_DEBUG off) and a real `rerank` worker (and an `embed`
worker when QUERY_EMBEDDING=queue), with a Redis key prefix of their own, and stops them at the
end. They get this shell's environment (DATABASE_URL, ELASTICSEARCH_INDEX_PREFIX, RERANKER_MODEL...)
and SEARCH_RATE_LIMIT raised out of reach: every client comes from 127.0.0.1, and the limiter still
runs (its Redis round trip is part of every request, as in production).

Then, with SciFact dev queries (the same file and split as bench/search_latency.py), each client
drawing its own sequence, every request `GET /api/search?q=...&collection=...&rerank=on`:
  1. warm-up (train queries), rounds of requests at once until the answers are 200s and rerank
     (every web process loads its bi-encoder on its first query, the worker its reranker);
  2. one client alone for --baseline-seconds: the single-client latency of this run;
  3. C clients at once for T seconds, one keep-alive connection each;
  4. --burst-clients at once for --burst-seconds;
  5. (without --url, unless --no-compare) the web server restarted with admission control off
     (RERANK_ADMISSION=0: every rerank request sent and waited for; SEARCH_MAX_IN_FLIGHT=0: no
     bound, searches queue in gunicorn), a short warm-up, and phases 2 and 3 again.
A client answered 503 waits its Retry-After (at most what is left of the phase) before its next
request, as a well-behaved client does. For every phase: requests/s, p50/p95/p99 latency (client
side, request sent to body read), status counts, connection errors, the share of 200s reranked and
why the others were not, 503s without Retry-After, and what the rerank workers did (their shared
counters: requests scored, cut at the deadline, dropped as expired, overran: answered after the
deadline but within the round trip the web process still waits, and late: scored after the
deadline, for nobody). Targets (docs/operating.md, "Under load"): no 5xx but 503, no connection
error, every 200 reranked or saying why not, every 503 with Retry-After, no late request; the
load p95 beside the single-client p95, requests/s on and off. The CPU and its flags come first: the
figures hold for that machine. Bounded: at most 200 clients, 600 s, loopback addresses only.
"""
from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rerank import cpu_description  # noqa: E402  (bench/rerank.py: the CPU line of every benchmark)
from search_latency import dev_queries  # noqa: E402  (bench/search_latency.py: the SciFact queries)

MAX_CLIENTS, MAX_SECONDS, MAX_BASELINE_SECONDS = 200, 600, 120
STARTUP_SECONDS, MAX_WARMUP_SECONDS = 300, 300
# Raised, not switched off, for the run: all clients share the address 127.0.0.1.
RAISED_RATE_LIMIT = "1000000000/minute"


# --------------------------------------------------------------------------- the stack


def loopback_url(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "http" or not parsed.hostname:
        raise SystemExit(f"--url must be http://HOST:PORT on this machine, not {url!r}")
    try:
        loopback = all(ipaddress.ip_address(info[4][0]).is_loopback
                       for info in socket.getaddrinfo(parsed.hostname, parsed.port or 80, proto=socket.IPPROTO_TCP))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--url {url!r}: cannot resolve {parsed.hostname!r}: {exc}") from None
    if not loopback:
        raise SystemExit(f"--url must be a loopback address (127.0.0.0/8, ::1, localhost), not {parsed.hostname!r}: "
                         "this benchmark only loads this machine")
    return parsed.hostname, parsed.port or 80


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """gunicorn and the Celery workers this run starts, each in its own process group."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict | None = None) -> None:
        log = open(self.logs / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def stop_one(self, name: str) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        text = (self.logs / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def start_stack(stack: Stack, args, port: int) -> dict:
    """The workers first (they answer pings before the web server is up), then gunicorn."""
    from django.conf import settings

    from searchsite.celery import app

    queues = [settings.RERANK_QUEUE] + ([settings.EMBED_QUEUE] if settings.QUERY_EMBEDDING == "queue" else [])
    names = []
    for queue in queues:
        name = f"{settings.CELERY_KEY_PREFIX.rstrip(':')}-{queue}@{socket.gethostname()}"
        concurrency = settings.RERANK_CONCURRENCY if queue == settings.RERANK_QUEUE else 1
        stack.start(f"worker-{queue}", [sys.executable, "-m", "celery", "-A", "searchsite", "worker", "-Q", queue,
                                        "-c", str(concurrency), "-n", name, "-l", "info",
                                        "--without-gossip", "--without-mingle"])
        names.append(name)
    start_web(stack, args, port)
    deadline = time.monotonic() + STARTUP_SECONDS
    waiting = set(names)
    while waiting and time.monotonic() < deadline:
        stack.check_alive()
        waiting -= {name for reply in (app.control.ping(destination=list(waiting), timeout=1.0) or [])
                    for name in reply}
    if waiting:
        raise SystemExit(f"no answer from the workers {sorted(waiting)} in {STARTUP_SECONDS} s")
    wait_for_web(stack, port)
    return {"web": web_description(args, port),
            "workers": ", ".join(f"{q} (-c {settings.RERANK_CONCURRENCY if q == settings.RERANK_QUEUE else 1})"
                                 for q in queues),
            "query_embedding": settings.QUERY_EMBEDDING,
            "search_max_in_flight": settings.SEARCH_MAX_IN_FLIGHT, "rerank_timeout": settings.RERANK_TIMEOUT}


# Admission control off: the rerank stage sends and waits for every request, and no bound on the
# searches in progress (what the site did before either existed).
ADMISSION_OFF = {"RERANK_ADMISSION": "0", "SEARCH_MAX_IN_FLIGHT": "0"}


# gunicorn's worker kinds this script can start (--web-server), each with its own arguments:
# gthread holds a thread per search (what the Procfile and the image run); gevent a greenlet
# (the sockets patched, the CPU work still one at a time per process); uvicorn runs the ASGI
# application, where Django runs each request's synchronous view in a thread of its own.
WEB_SERVERS = {
    "gthread": lambda args: ["searchsite.wsgi", "--threads", str(args.web_threads)],
    "gevent": lambda args: ["searchsite.wsgi", "-k", "gevent", "--worker-connections", "1000"],
    "uvicorn": lambda args: ["searchsite.asgi", "-k", "uvicorn_worker.UvicornWorker"],
}


def web_description(args, port: int) -> str:
    threads = f" --threads {args.web_threads}" if args.web_server == "gthread" else ""
    return f"gunicorn -w {args.web_workers}{threads} ({args.web_server}) on 127.0.0.1:{port}"


def start_web(stack: Stack, args, port: int, env: dict | None = None) -> None:
    # Keep-alive longer than any pause between a client's requests: a connection the server
    # closes between two requests would show up as a reconnect, not as the server's work.
    stack.start("web", [sys.executable, "-m", "gunicorn", *WEB_SERVERS[args.web_server](args),
                        "-c", "searchsite/gunicorn_conf.py", "-b", f"127.0.0.1:{port}", "-w", str(args.web_workers),
                        "--timeout", "120", "--keep-alive", "30"],
                {"PROMETHEUS_MULTIPROC_DIR": str(stack.logs / "prometheus"), **(env or {})})


def wait_for_web(stack: Stack, port: int) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/healthz")
            conn.getresponse().read()  # any answer: up (503 when, say, no embed worker runs)
            conn.close()
            break
        except OSError:
            time.sleep(1)
    else:
        raise SystemExit(f"gunicorn did not answer on port {port} in {STARTUP_SECONDS} s:\n{stack.tail('web')}")


# --------------------------------------------------------------------------- clients


class Recorder:
    """What one phase saw, appended to by every client thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latencies_ms: list[float] = []
        self.ok_latencies_ms: list[float] = []  # of the 200s alone
        self.statuses: Counter = Counter()
        self.errors: Counter = Counter()  # connection errors by kind
        self.reopened = 0  # keep-alive connections the server had closed, reopened for a retry
        self.reranked = 0
        self.not_reranked: Counter = Counter()
        self.unexplained = 0  # 200s neither reranked nor saying why
        self.vector_cached = 0
        self.examples: dict[int, str] = {}  # first body of each unexpected status
        self.unavailable_without_retry_after = 0

    def record(self, status: int, ms: float, body: bytes, retry_after: str | None = None) -> None:
        with self.lock:
            self.latencies_ms.append(ms)
            self.statuses[status] += 1
            if status == 200:
                self.ok_latencies_ms.append(ms)
            if status == 503 and not (retry_after or "").isdigit():
                self.unavailable_without_retry_after += 1
            if status != 200:
                self.examples.setdefault(status, body[:300].decode(errors="replace"))
                return
            try:
                answer = json.loads(body)
                rerank = answer["rerank"]
            except (ValueError, KeyError) as exc:
                self.unexplained += 1
                self.examples.setdefault(-200, f"unreadable 200 ({exc}): {body[:300]!r}")
                return
            self.vector_cached += bool(answer.get("query_vector_cached"))
            if rerank["applied"]:
                self.reranked += 1
            elif rerank.get("not_reranked"):
                self.not_reranked[rerank["not_reranked"]] += 1
            else:
                self.unexplained += 1

    def error(self, exc: Exception) -> None:
        with self.lock:
            self.errors[type(exc).__name__] += 1

    def summary(self, seconds: float, clients: int) -> dict:
        ok = self.statuses.get(200, 0)
        def pct(q, values=self.latencies_ms):
            return round(float(np.percentile(values, q)), 1) if values else None

        return {
            "clients": clients, "seconds": round(seconds, 1), "requests": len(self.latencies_ms),
            "requests_per_s": round(len(self.latencies_ms) / seconds, 2) if seconds else None,
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "ok_per_s": round(ok / seconds, 2) if seconds else None,
            "ok_p50_ms": pct(50, self.ok_latencies_ms), "ok_p95_ms": pct(95, self.ok_latencies_ms),
            "ok_p99_ms": pct(99, self.ok_latencies_ms),
            "reranked_per_s": round(self.reranked / seconds, 2) if seconds else None,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "status_5xx": sum(v for k, v in self.statuses.items() if k >= 500),
            "status_5xx_but_503": sum(v for k, v in self.statuses.items() if k >= 500 and k != 503),
            "unavailable_without_retry_after": self.unavailable_without_retry_after,
            "connection_errors": dict(self.errors), "connections_reopened": self.reopened,
            "reranked": self.reranked, "reranked_share": round(self.reranked / ok, 4) if ok else None,
            "not_reranked": dict(self.not_reranked.most_common()), "unexplained_200s": self.unexplained,
            "query_vector_cached": self.vector_cached,
            "examples": {str(k): v for k, v in self.examples.items()},
        }


STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class Client:
    """One keep-alive connection; a new one after a connection error."""

    def __init__(self, host: str, port: int, timeout: float):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn: http.client.HTTPConnection | None = None
        self.used = False  # the connection has carried a response

    def get(self, path: str, recorder: Recorder) -> float:
        """One request; the seconds a 503 asks to wait (its Retry-After), else 0."""
        for attempt in (1, 2):
            if self.conn is None:
                self.conn, self.used = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout), False
            started = time.perf_counter()
            try:
                self.conn.request("GET", path)
                response = self.conn.getresponse()
                body = response.read()
            except Exception as exc:  # every failure is counted, by kind
                reused, self.conn = self.used, None
                if attempt == 1 and reused and isinstance(exc, STALE):
                    # The server closed an idle keep-alive connection as we sent: what every
                    # HTTP client retries once on a fresh connection; counted apart.
                    with recorder.lock:
                        recorder.reopened += 1
                    continue
                recorder.error(exc)
                time.sleep(0.05)  # a server that is gone must not turn this loop into a spin
                return 0.0
            retry_after = response.getheader("Retry-After")
            recorder.record(response.status, (time.perf_counter() - started) * 1000, body, retry_after)
            self.used = True
            if response.will_close:
                self.conn.close()
                self.conn = None
            return float(retry_after) if response.status == 503 and (retry_after or "").isdigit() else 0.0
        return 0.0

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def run_phase(host: str, port: int, clients: int, queries: list[str], collection: str, mode: str | None,
              timeout: float, seed: int, *, seconds: float | None = None, each: int | None = None
              ) -> tuple[Recorder, float]:
    """`clients` threads, each sending requests one after another until `seconds` have passed (a
    request started before then is waited for), or `each` requests each."""
    recorder = Recorder()
    started = time.monotonic()
    deadline = started + seconds if seconds is not None else None

    def one_client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        client = Client(host, port, timeout)
        sent = 0

        def more() -> bool:
            return time.monotonic() < deadline if deadline is not None else sent < each

        try:
            while more():
                params = {"q": rng.choice(queries), "collection": collection, "k": 10, "rerank": "on"}
                if mode:
                    params["mode"] = mode
                wait = client.get("/api/search?" + urllib.parse.urlencode(params), recorder)
                sent += 1
                if wait and deadline is not None:
                    time.sleep(max(0.0, min(wait, deadline - time.monotonic())))
        finally:
            client.close()

    threads = [threading.Thread(target=one_client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return recorder, time.monotonic() - started


def warm_up(host: str, port: int, parallel: int, queries: list[str], collection: str, mode: str | None,
            timeout: float, limit_s: float) -> dict:
    """Rounds of `parallel` requests at once (so that every web process gets some and loads its
    bi-encoder) until, after the first round, one round answers only 200s and reranks at least
    one (the worker has its model); at most `limit_s` seconds. Not every answer need be reranked:
    `parallel` requests at once may be more than the workers score within RERANK_TIMEOUT."""
    deadline, rounds = time.monotonic() + limit_s, 0
    while time.monotonic() < deadline:
        rounds += 1
        recorder, seconds = run_phase(host, port, parallel, queries, collection, mode, timeout,
                                      seed=10_000 + rounds, each=1)
        print(f"  warm-up round {rounds}: {seconds:.1f} s, statuses {dict(recorder.statuses)}, reranked "
              f"{recorder.reranked}/{parallel}" + (f", errors {dict(recorder.errors)}" if recorder.errors else ""),
              flush=True)
        # 503s are the bound on searches in progress at work (searchsite/admission.py), not a failure.
        if rounds > 1 and recorder.reranked and set(recorder.statuses) <= {200, 503}:
            return {"rounds": rounds, "ready": True}
    print(f"  warm-up: no round answered only 200s (and 503s) with a reranked one in {limit_s:.0f} s; measuring anyway")
    return {"rounds": rounds, "ready": False}


# --------------------------------------------------------------------------- report


def print_table(phases: dict[str, dict]) -> None:
    rows = [("requests", "requests"), ("requests/s", "requests_per_s"), ("p50 ms", "p50_ms"), ("p95 ms", "p95_ms"),
            ("p99 ms", "p99_ms"), ("200s/s", "ok_per_s"), ("200s p50 ms", "ok_p50_ms"), ("200s p95 ms", "ok_p95_ms"),
            ("200s p99 ms", "ok_p99_ms"), ("reranked 200s/s", "reranked_per_s")]
    names = list(phases)
    print(f"\n{'':<26}" + "".join(f"{name:>28}" for name in names))
    for label, key in rows:
        print(f"{label:<26}" + "".join(f"{str(phases[n][key]):>28}" for n in names))
    for label, fn in (
        ("statuses", lambda s: " ".join(f"{k}:{v}" for k, v in s["statuses"].items()) or "-"),
        ("connection errors", lambda s: sum(s["connection_errors"].values())),
        ("connections reopened", lambda s: s["connections_reopened"]),
        ("reranked (of 200s)", lambda s: f"{s['reranked']} ({s['reranked_share']:.1%})"
                                          if s["reranked_share"] is not None else "-"),
        ("200s without a reason", lambda s: s["unexplained_200s"]),
        ("503s without Retry-After", lambda s: s["unavailable_without_retry_after"]),
        ("query vector cached", lambda s: s["query_vector_cached"]),
    ):
        print(f"{label:<26}" + "".join(f"{str(fn(phases[n])):>28}" for n in names))
    for name, s in phases.items():
        if s["connection_errors"]:
            print(f"{name}: connection errors by kind: {s['connection_errors']}")
        for reason, count in s["not_reranked"].items():
            print(f"{name}: not reranked {count} ×: {reason}")
        for status, body in s["examples"].items():
            print(f"{name}: first {status} answer: {body}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50, help=f"concurrent clients (1 to {MAX_CLIENTS})")
    parser.add_argument("--seconds", type=float, default=60, help=f"length of the load (at most {MAX_SECONDS})")
    parser.add_argument("--baseline-seconds", type=float, default=20,
                        help=f"one client alone before the load (at most {MAX_BASELINE_SECONDS})")
    parser.add_argument("--warmup-seconds", type=float, default=180,
                        help=f"longest warm-up before measuring (at most {MAX_WARMUP_SECONDS})")
    parser.add_argument("--url", help="a running stack on this machine (default: start one)")
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn processes (without --url)")
    parser.add_argument("--web-threads", type=int, default=8,
                        help="threads per gunicorn process (without --url); more than SEARCH_MAX_IN_FLIGHT, so "
                             "that the threads past the bound answer its 503s")
    parser.add_argument("--web-server", choices=sorted(WEB_SERVERS), default="gthread",
                        help="gunicorn's worker kind (without --url; default gthread, as deployed)")
    parser.add_argument("--burst-clients", type=int, default=200, help="clients of the burst phase (0: none)")
    parser.add_argument("--burst-seconds", type=float, default=30, help="length of the burst phase")
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the run with admission control off (without --url)")
    parser.add_argument("--collection", default="scifact")
    parser.add_argument("--mode", choices=["semantic", "keyword", "hybrid"],
                        help="search mode (default: the server's SEARCH_DEFAULT_MODE)")
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "datasets" / "scifact")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--request-timeout", type=float, default=60.0, help="seconds a client waits for an answer")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS:
        parser.error(f"--clients must be between 1 and {MAX_CLIENTS}, not {args.clients}")
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be more than 0 and at most {MAX_SECONDS}, not {args.seconds}")
    if not 0 < args.baseline_seconds <= MAX_BASELINE_SECONDS:
        parser.error(f"--baseline-seconds must be more than 0 and at most {MAX_BASELINE_SECONDS}")
    if not 0 < args.warmup_seconds <= MAX_WARMUP_SECONDS:
        parser.error(f"--warmup-seconds must be more than 0 and at most {MAX_WARMUP_SECONDS}")
    if not 0 <= args.burst_clients <= MAX_CLIENTS or not 0 < args.burst_seconds <= MAX_SECONDS:
        parser.error(f"--burst-clients must be between 0 and {MAX_CLIENTS}, --burst-seconds within (0, {MAX_SECONDS}]")
    if args.web_workers < 1 or args.web_threads < 1:
        parser.error("--web-workers and --web-threads must be at least 1")
    if not (args.dataset / "queries.jsonl").is_file():
        parser.error(f"--dataset {args.dataset}: no queries.jsonl there (a BEIR folder, e.g. SciFact)")

    print(cpu_description(), flush=True)
    queries = dev_queries(args.dataset, args.split, 10_000)
    warmup_queries = dev_queries(args.dataset, "train", 50)

    stack, setup = None, {}
    if args.url:
        host, port = loopback_url(args.url)
        try:
            conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
        except OSError as exc:
            raise SystemExit(f"nothing answers at {args.url}: {exc}") from None
        setup = {"web": f"running at {args.url} (its own settings)"}
    else:
        # The run's own Redis prefix (queues, results, rate-limit counters); production settings.
        own_prefix = f"loadbench{os.getpid()}:"
        os.environ["CELERY_KEY_PREFIX"] = own_prefix
        os.environ["SEARCH_RATE_LIMIT"] = os.environ["SEARCH_RATE_LIMIT_USER"] = RAISED_RATE_LIMIT
        os.environ["SEARCH_RATE_LIMIT_ENABLED"] = "1"
        os.environ["DJANGO_DEBUG"] = "0"
        os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(40))
        import django

        django.setup()
        from django.conf import settings

        from indexer.models import Collection

        from django.db import DatabaseError

        try:
            collection = Collection.objects.filter(slug=args.collection).first()
        except DatabaseError as exc:
            raise SystemExit(f"cannot read collections from {settings.DATABASES['default']['NAME']} ({exc}): set "
                             "DATABASE_URL to the stack that indexed the collection") from None
        if collection is None:
            raise SystemExit(f"no collection {args.collection!r} in {settings.DATABASES['default']['NAME']}: set "
                             "DATABASE_URL (and ELASTICSEARCH_INDEX_PREFIX) to the stack that indexed it, or "
                             "`make run` (the demo imports SciFact as `scifact`)")
        model = collection.reranker_model or settings.RERANKER_MODEL
        if not model:
            raise SystemExit(f"{collection.slug} has no reranker and RERANKER_MODEL is empty: this benchmark "
                             "measures the search with rerank on (install one: manage.py demo_reranker, or set "
                             "RERANKER_MODEL=DIR for this run)")
        host, port = "127.0.0.1", free_port()
        logs = Path(tempfile.mkdtemp(prefix="load-bench-"))
        stack = Stack(logs)
        print(f"starting gunicorn and the workers (logs in {logs}); reranker: {model}", flush=True)
    try:
        if stack:
            setup = start_stack(stack, args, port)
        print(f"web: {setup['web']}" + (f"; workers: {setup['workers']}; query embedding: {setup['query_embedding']}"
                                        if stack else ""), flush=True)
        parallel = args.web_workers * args.web_threads if stack else min(args.clients, 16)
        print(f"warm-up: rounds of {parallel} requests at once (at most {args.warmup_seconds:.0f} s)", flush=True)
        warm = warm_up(host, port, parallel, warmup_queries, args.collection, args.mode, args.request_timeout,
                       args.warmup_seconds)
        phases: dict[str, dict] = {}
        workers: dict[str, dict] = {}

        def measure(name: str, clients: int, seconds: float, seed: int) -> None:
            print(f"{name}: {clients} client(s) for {seconds:.0f} s...", flush=True)
            before = worker_counters() if stack else {}
            recorder, took = run_phase(host, port, clients, queries, args.collection, args.mode,
                                       args.request_timeout, seed=seed, seconds=seconds)
            phases[name] = recorder.summary(took, clients)
            if stack:
                workers[name] = counter_delta(before, worker_counters())
                phases[name]["rerank_workers"] = workers[name]

        measure("single client", 1, args.baseline_seconds, seed=1)
        measure(f"{args.clients} clients", args.clients, args.seconds, seed=2)
        if args.burst_clients:
            measure(f"{args.burst_clients} clients", args.burst_clients, args.burst_seconds, seed=3)
        if stack and not args.no_compare:
            print(f"restarting the web server with admission control off ({ADMISSION_OFF})", flush=True)
            stack.stop_one("web")
            start_web(stack, args, port, ADMISSION_OFF)
            wait_for_web(stack, port)
            warm_up(host, port, parallel, warmup_queries, args.collection, args.mode, args.request_timeout,
                    min(args.warmup_seconds, 120))
            measure("single client, admission off", 1, args.baseline_seconds, seed=1)
            measure(f"{args.clients} clients, admission off", args.clients, args.seconds, seed=2)
        if stack:
            stack.check_alive()
    finally:
        if stack:
            stack.stop()
            web_log = "".join((stack.logs / name).read_text(errors="replace") for name in ("web.log",))
            setup["web_worker_timeouts"] = web_log.count("WORKER TIMEOUT")
            setup["logs"] = str(stack.logs)
            delete_keys(own_prefix)

    print(f"\ncollection={args.collection} mode={args.mode or '(server default)'} queries: {len(queries)} "
          f"{args.split} queries of {args.dataset.name}, drawn at random per client; rerank=on; "
          f"setup: {json.dumps({k: v for k, v in setup.items() if k != 'logs'})}")
    print_table(phases)
    single_p95 = phases["single client"]["p95_ms"]
    load_name = f"{args.clients} clients"
    off_name = f"{args.clients} clients, admission off"
    s = phases[load_name]
    print(f"\np95 under load {s['p95_ms']} ms beside {single_p95} ms for a single client"
          + (f" (×{s['p95_ms'] / single_p95:.2f})" if s["p95_ms"] and single_p95 else ""))
    if off_name in phases:
        off = phases[off_name]
        print(f"admission control on / off with {args.clients} clients: {s['requests_per_s']} / {off['requests_per_s']} "
              f"requests/s" + (f" (×{s['requests_per_s'] / off['requests_per_s']:.2f})" if off["requests_per_s"] else "")
              + f", p95 {s['p95_ms']} / {off['p95_ms']} ms")
    for name, counts in workers.items():
        print(f"{name}: rerank workers: {counts}")
    checks = {}
    for name, phase in phases.items():
        if name.endswith("admission off"):
            continue
        checks[f"{name}: no 5xx but 503"] = phase["status_5xx_but_503"] == 0
        checks[f"{name}: no connection error"] = not phase["connection_errors"]
        checks[f"{name}: every 200 reranked or saying why not"] = phase["unexplained_200s"] == 0
        checks[f"{name}: every 503 with Retry-After"] = phase["unavailable_without_retry_after"] == 0
        if name in workers:
            checks[f"{name}: no rerank request answered after the web process stopped waiting"] = \
                workers[name].get("late", 0) == 0
    print("targets: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks.items()))
    refused = sum(p["statuses"].get("429", 0) for p in phases.values())
    if refused:
        print(f"{refused} answers were 429: the server's rate limit counted this benchmark (all clients are one "
              "address); start that server with SEARCH_RATE_LIMIT raised (or let this script start the stack)")
    if stack and setup.get("web_worker_timeouts"):
        print(f"gunicorn killed {setup['web_worker_timeouts']} worker(s) for a timeout (see {setup['logs']}/web.log)")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_description(), "setup": setup, "warm_up": warm,
                                         "phases": phases, "targets": checks}, indent=2))
        print(f"figures written to {args.json}")
    return 0 if all(checks.values()) else 1


def worker_counters() -> dict[str, int]:
    """The rerank workers' requests by outcome (common/service_metrics.py, shared in Redis)."""
    from common.service_metrics import read_shared

    try:
        return {labels.get("outcome", name): value for name, labels, value in read_shared()
                if name == "rerank_worker_requests"}
    except Exception as exc:  # the figures are extra: a Redis error leaves them out
        print(f"(rerank worker counters unavailable: {exc})")
        return {}


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before.get(key, 0) for key in sorted(after) if after[key] - before.get(key, 0)}


def delete_keys(prefix: str) -> None:
    """The run's queues, results and counters (the prefix this run made up) go with it."""
    import redis
    from django.conf import settings

    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
        keys = list(client.scan_iter(f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    except redis.RedisError as exc:
        print(f"(the run's Redis keys {prefix}* stay: {exc})")


if __name__ == "__main__":
    sys.exit(main())
