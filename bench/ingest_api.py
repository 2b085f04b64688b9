"""Documents in over HTTP against `import_corpus`, and POST /api/rerank against a search's rerank
stage, in one run on the real web stack. Not a test: it prints numbers.

    .venv/bin/python bench/ingest_api.py [--dataset /work/shared/datasets/scifact] [--batch 500]
                                         [--rounds 2] [--queries 40] [--index-docs 300]

Isolated like bench/indexing.py (its own SQLite file, Elasticsearch index prefix and Redis key
prefix, all removed at the end). It starts gunicorn (2 processes × 4 threads, DJANGO_DEBUG off),
a `rerank` and an `embed` worker, then:

1. **Ingestion**, `--rounds` times, alternating which goes first: `manage.py import_corpus` of the
   dataset's corpus.jsonl into a fresh collection (in this process, as an operator runs it), and
   the same documents POSTed to another fresh collection as NDJSON in batches of `--batch`
   through one keep-alive connection with a write key, until the last answer (every document
   accepted and queued for indexing, as the import leaves them). Then the same batches again: all
   `unchanged`. Both paths queue the same indexing tasks; no embed worker takes them (the queue
   is dropped at the end), so the clock holds only the write path.
2. **Rerank**: the first `--index-docs` documents indexed by the embed worker into a third
   collection; for each of `--queries` SciFact dev queries, a search (`mode=hybrid`, `rerank=on`,
   `group=off`, `k=50`, RERANK_TOP_N and RERANK_MIN_CANDIDATES 50: the rerank stage scores 50
   chunks), and POST /api/rerank of the same 50 passages (title + chunk text, as the search sends
   them), alternating. The search's `timings_ms.rerank` against the rerank call's latency seen by
   the client and its own `ms`; p50 and p95, over the queries both sides scored whole (the others
   are counted, with why). RERANK_TIMEOUT is 30 s unless set: a busy CPU takes seconds for 50.

The reranker is RERANKER_MODEL when set, else MiniLM-L6's body with a fixed random head (the
size and speed of the ms-marco MiniLM cross-encoders; the scores mean nothing here). Its precision
is forced to float32 (RERANKER_PRECISION), as the bi-encoder's OpenVINO runtime already is, so a
bf16 CPU computes what others do. The CPU and its flags come first.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RUN = secrets.token_hex(3)
TMP = Path(tempfile.mkdtemp(prefix=f"bench-ingest-api-{RUN}-"))
# Isolation, before Django reads its settings; the processes started below inherit it.
os.environ["ELASTICSEARCH_INDEX_PREFIX"] = f"bench-{RUN}"
os.environ["CELERY_KEY_PREFIX"] = f"bench-{RUN}:"
os.environ["DATABASE_URL"] = f"sqlite:///{TMP / 'bench.sqlite3'}"
os.environ["DJANGO_DEBUG"] = "0"
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_hex(32))
os.environ["SEARCH_RATE_LIMIT"] = os.environ["SEARCH_RATE_LIMIT_USER"] = "1000000000/minute"
os.environ["RERANKER_PRECISION"] = "float32"
os.environ["RERANK_TOP_N"] = os.environ["RERANK_MIN_CANDIDATES"] = "50"
os.environ.setdefault("RERANK_TIMEOUT", "30")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from load import Stack, wait_for_web  # noqa: E402  (bench/load.py: processes and the web server's start)
from rerank import cpu_description  # noqa: E402  (bench/rerank.py: the CPU line of every benchmark)
from search_latency import dev_queries  # noqa: E402  (bench/search_latency.py: the SciFact queries)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=Path("/work/shared/datasets/scifact"))
    parser.add_argument("--batch", type=int, default=500, help="documents per POST (at most API_DOCUMENTS_MAX_LINES)")
    parser.add_argument("--rounds", type=int, default=2, help="ingestion rounds (0: no ingestion part)")
    parser.add_argument("--queries", type=int, default=40, help="searches and reranks (0: no rerank part)")
    parser.add_argument("--index-docs", type=int, default=300, help="documents indexed for the searches")
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reranker_model() -> str:
    if os.environ.get("RERANKER_MODEL"):
        return os.environ["RERANKER_MODEL"]
    import torch
    from sentence_transformers import CrossEncoder

    from indexer.embedding import resolve_model_path

    torch.manual_seed(1234)
    path = TMP / "reranker"
    CrossEncoder(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"), num_labels=1).save(str(path))
    return str(path)


class Client:
    """One keep-alive connection to the web server, with the key."""

    def __init__(self, port: int, key: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        self.headers = {"Authorization": f"Bearer {key}"}

    def call(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None):
        headers = dict(self.headers, **({"Content-Type": content_type} if content_type else {}))
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            # The server closed the idle keep-alive connection (a long wait for indexing): again, on a new one.
            self.conn.close()
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None


def api_lines(corpus: Path) -> list[bytes]:
    """corpus.jsonl as the API takes it: {"id", "title", "text", "metadata"} per line."""
    lines = []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                doc = json.loads(line)
                lines.append(json.dumps({"id": doc["_id"], "title": doc.get("title", ""), "text": doc["text"],
                                         "metadata": doc.get("metadata") or {}}, ensure_ascii=False).encode())
    return lines


def by_import(corpus: Path, slug: str) -> float:
    from django.core.management import call_command

    started = time.perf_counter()
    call_command("import_corpus", slug, str(corpus), "--create", "--no-chunk-count", stdout=open(os.devnull, "w"),
                 stderr=open(os.devnull, "w"))
    return time.perf_counter() - started


def by_api(client: Client, lines: list[bytes], slug: str, batch: int, expect: str) -> float:
    started = time.perf_counter()
    for start in range(0, len(lines), batch):
        status, answer = client.call("POST", f"/api/collections/{slug}/documents",
                                     b"\n".join(lines[start:start + batch]) + b"\n", "application/x-ndjson")
        if status != 200 or answer["errors"] or answer[expect] != len(lines[start:start + batch]):
            raise SystemExit(f"batch at {start}: {status} {json.dumps(answer)[:500]}")
    return time.perf_counter() - started


def statuses(slug: str) -> dict:
    from django.db.models import Count

    from indexer.models import Document

    return dict(Document.objects.filter(collection__slug=slug).values_list("status").annotate(n=Count("pk")))


def ingestion(args, port: int, lines: list[bytes]) -> None:
    from api.keys import create_key
    from indexer.models import Collection

    corpus = args.dataset / "corpus.jsonl"
    imports, posts = [], []
    for round_number in range(args.rounds):
        api_slug, cli_slug = f"api-{round_number}", f"cli-{round_number}"
        collection = Collection.objects.create(name=api_slug, slug=api_slug)
        client = Client(port, create_key(f"bench {round_number}", [collection], can_write=True)[1])
        order = ("import", "api") if round_number % 2 == 0 else ("api", "import")
        for which in order:
            if which == "import":
                imports.append(by_import(corpus, cli_slug))
            else:
                posts.append(by_api(client, lines, api_slug, args.batch, "created"))
        unchanged = by_api(client, lines, api_slug, args.batch, "unchanged")
        print(f"round {round_number + 1} ({' then '.join(order)}): import_corpus {imports[-1]:.2f} s "
              f"({len(lines) / imports[-1]:.0f} docs/s), API {posts[-1]:.2f} s ({len(lines) / posts[-1]:.0f} docs/s, "
              f"{posts[-1] / imports[-1]:.2f}x), the same again through the API, all unchanged: {unchanged:.2f} s; "
              f"statuses: import {statuses(cli_slug)}, API {statuses(api_slug)}", flush=True)
    ratio = np.median(posts) / np.median(imports)
    print(f"ingestion of {len(lines)} documents, batches of {args.batch}: import_corpus median "
          f"{np.median(imports):.2f} s, API median {np.median(posts):.2f} s = {ratio:.2f}x (target <= 2x)", flush=True)


def wait_indexed(slug: str, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = statuses(slug)
        if set(now) == {"indexed"}:
            return
        if "failed" in now:
            raise SystemExit(f"indexing failed: {now}")
        time.sleep(1)
    raise SystemExit(f"not indexed in {timeout} s: {statuses(slug)}")


def reranking(args, port: int, lines: list[bytes]) -> None:
    from api.keys import create_key
    from indexer.models import Collection, Document
    from indexer.store import alias_name, get_store

    slug = "rerank-bench"
    collection = Collection.objects.create(name=slug, slug=slug)
    client = Client(port, create_key("bench rerank", [collection], can_write=True)[1])
    started = time.perf_counter()
    by_api(client, lines[:args.index_docs], slug, args.batch, "created")
    wait_indexed(slug)
    get_store().refresh(alias_name(slug))
    print(f"{args.index_docs} documents indexed by the embed worker in {time.perf_counter() - started:.0f} s", flush=True)
    texts = {d.external_id: (d.title, d.text) for d in Document.objects.filter(collection=collection)}

    def search(query: str):
        from urllib.parse import urlencode

        status, answer = client.call("GET", "/api/search?" + urlencode(
            {"q": query, "collection": slug, "mode": "hybrid", "rerank": "on", "group": "off", "k": 50}))
        if status != 200:
            raise SystemExit(f"search: {status} {answer}")
        return answer

    def passages(answer) -> list[str]:
        out = []
        for result in answer["results"]:
            title, text = texts[result["external_id"]]
            chunk = text[result["start"]:result["end"]]
            out.append(f"{title}\n{chunk}" if title else chunk)
        return out

    queries = dev_queries(args.dataset, "dev", args.queries + 5)
    for query in queries[:5]:  # warm-up: every web process's bi-encoder, the worker's reranker
        answer = search(query)
        client.call("POST", "/api/rerank", json.dumps({"query": query, "documents": passages(answer)}).encode(),
                    "application/json")
    stage, api_client, api_own, sizes, left_out = [], [], [], [], []
    for query in queries[5:]:
        answer = search(query)
        body = passages(answer)
        t0 = time.perf_counter()
        status, reranked = client.call("POST", "/api/rerank", json.dumps({"query": query, "documents": body}).encode(),
                                       "application/json")
        client_ms = (time.perf_counter() - t0) * 1000
        # Only pairs where both sides scored all 50 are compared; the others are counted, with why.
        if not answer["rerank"]["applied"] or answer["rerank"]["reranked"] != 50:
            left_out.append(f"search: {answer['rerank']['not_reranked'] or answer['rerank']['reranked']}")
            continue
        if status != 200 or reranked["scored"] != len(body):
            left_out.append(f"rerank: {status} {reranked.get('error') or reranked.get('scored')}")
            continue
        stage.append(answer["timings_ms"]["rerank"])
        sizes.append(len(body))
        api_client.append(client_ms)
        api_own.append(reranked["ms"])
    if left_out:
        print(f"{len(left_out)} of {len(queries) - 5} queries left out: {left_out}", flush=True)
    if not stage:
        raise SystemExit("no query was reranked fully on both sides")
    p = lambda values, q: float(np.percentile(values, q))  # noqa: E731
    print(f"rerank of {int(np.median(sizes))} passages, {len(stage)} queries, model {reranked['model']} "
          f"({reranked['runtime']}, {reranked['precision']}):\n"
          f"  search rerank stage (timings_ms.rerank): p50 {p(stage, 50):.0f} ms, p95 {p(stage, 95):.0f} ms\n"
          f"  POST /api/rerank, client side:          p50 {p(api_client, 50):.0f} ms, p95 {p(api_client, 95):.0f} ms "
          f"({p(api_client, 95) / p(stage, 95):.2f}x the stage's p95; target <= 1.10x)\n"
          f"  POST /api/rerank, its own ms:           p50 {p(api_own, 50):.0f} ms, p95 {p(api_own, 95):.0f} ms", flush=True)


def main():
    args = parse_args()
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    print(cpu_description(), flush=True)
    print(f"run {RUN}, files in {TMP}; float32 reranker; other processes on this machine share its CPUs", flush=True)
    call_command("migrate", verbosity=0)
    lines = api_lines(args.dataset / "corpus.jsonl")
    model = reranker_model()
    os.environ["RERANKER_MODEL"] = model
    settings.RERANKER_MODEL = model
    stack = Stack(TMP)
    port = free_port()
    try:
        stack.start("web", [sys.executable, "-m", "gunicorn", "searchsite.wsgi", "-c", "searchsite/gunicorn_conf.py",
                            "-b", f"127.0.0.1:{port}", "-w", "2", "--threads", "4", "--timeout", "600",
                            "--keep-alive", "30"], {"PROMETHEUS_MULTIPROC_DIR": str(TMP / "prometheus")})
        wait_for_web(stack, port)
        if args.rounds:
            ingestion(args, port, lines)
        if args.queries:
            import redis

            # The ingestion's indexing tasks are not for this part: its embed worker indexes only
            # the documents below (kombu's Redis transport: one list per queue).
            redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(f"{settings.CELERY_KEY_PREFIX}{settings.EMBED_QUEUE}")
            for queue in (settings.RERANK_QUEUE, settings.EMBED_QUEUE):
                stack.start(f"worker-{queue}", [sys.executable, "-m", "celery", "-A", "searchsite", "worker", "-Q",
                                                queue, "-c", "1", "-n", f"bench-{RUN}-{queue}@%h", "-l", "info",
                                                "--without-gossip", "--without-mingle"])
            reranking(args, port, lines)
    finally:
        stack.stop()
        cleanup()


def cleanup():
    """Remove everything this run created: indices, Redis keys, the SQLite file."""
    if os.environ.get("BENCH_KEEP"):
        return
    try:
        import redis
        from django.conf import settings

        from indexer.store import get_store

        get_store().drop_indices([f"{os.environ['ELASTICSEARCH_INDEX_PREFIX']}-*"])
        client = redis.Redis.from_url(settings.REDIS_URL)
        for key in client.scan_iter(match=f"{os.environ['CELERY_KEY_PREFIX']}*", count=1000):
            client.delete(key)
    except Exception as exc:
        print(f"cleanup: {type(exc).__name__}: {exc}", file=sys.stderr)
    shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
