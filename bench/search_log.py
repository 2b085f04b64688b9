"""What the search log costs a search: the same API searches with SEARCH_LOG_ENABLED on and off,
interleaved (on, off, on, off...) so that the machine's load falls on both alike. Not a test: it
prints p50/p95 of each and the difference.

In one process through Django's test client (every middleware, the view, the real engine, the
log written to SQLite in WAL mode as `make run` does): a throwaway database and index prefix;
`--documents` SciFact documents indexed with the real pipeline (bi-encoder on the CPU), then
`--queries` SciFact queries in keyword mode without reranking, so that the search itself is
short and the log's share shows. Also the log's listener alone (analytics.search_log.log_search,
timed where the view calls it), which the search's own variance does not blur.

    flock /tmp/bench.lock .venv/bin/python bench/search_log.py --documents 300 --queries 200
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RUN = secrets.token_hex(3)
TMP = Path(tempfile.mkdtemp(prefix=f"bench-search-log-{RUN}-"))
os.environ["ELASTICSEARCH_INDEX_PREFIX"] = f"bench-{RUN}"
os.environ["CELERY_KEY_PREFIX"] = f"bench-{RUN}:"
os.environ["DATABASE_URL"] = f"sqlite:///{TMP / 'bench.sqlite3'}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["SEARCH_RATE_LIMIT_ENABLED"] = "false"

SCIFACT = ROOT.parent / "shared" / "datasets" / "scifact"


def cpu_line() -> str:
    info = Path("/proc/cpuinfo").read_text().splitlines()
    name = next((l.split(":", 1)[1].strip() for l in info if l.startswith("model name")), "?")
    flags = set(next((l.split(":", 1)[1].split() for l in info if l.startswith("flags")), []))
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    return f"{name}, {os.cpu_count()} cores, flags: {' '.join(shown) or 'none of avx2/avx512/amx'}"


def read_jsonl(path: Path, limit: int) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            rows.append(json.loads(line))
            if len(rows) == limit:
                break
    return rows


def percentiles(values: list[float]) -> str:
    return f"p50 {np.percentile(values, 50):7.2f} ms   p95 {np.percentile(values, 95):7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=300)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client

    from analytics.models import SearchLog
    from indexer.models import Collection, Document
    from indexer.pipeline import index_documents
    from indexer.store import alias_name, get_store

    print(cpu_line())
    print("Other agents may be loading the same CPU: figures are for comparing on with off in one run.")
    call_command("migrate", verbosity=0)
    collection = Collection.objects.create(name="SciFact", slug="scifact", visibility=Collection.Visibility.PUBLIC)
    docs = read_jsonl(SCIFACT / "corpus.jsonl", args.documents)
    Document.objects.bulk_create([Document(collection=collection, external_id=d["_id"], title=d.get("title", ""),
                                           text=d["text"], content_hash=Document.compute_hash(d.get("title", ""), d["text"], {}))
                                  for d in docs])
    started = time.perf_counter()
    index_documents(list(Document.objects.values_list("pk", flat=True)))
    store = get_store()
    store.client.indices.refresh(index=alias_name("scifact"))
    print(f"{len(docs)} documents indexed in {time.perf_counter() - started:.0f} s")
    queries = [q["text"] for q in read_jsonl(SCIFACT / "queries.jsonl", args.queries)]
    from search import search_hooks

    listener_ms: list[float] = []

    def timed(listener):
        def run(*args):
            begun = time.perf_counter()
            listener(*args)
            if settings.SEARCH_LOG_ENABLED:
                listener_ms.append((time.perf_counter() - begun) * 1000)
        return run

    search_hooks._listeners[:] = [timed(listener) if listener.__name__ == "log_search" else listener
                                  for listener in search_hooks._listeners]
    client = Client()
    timings = {True: [], False: []}
    try:
        for warm in queries[:10]:
            client.get("/api/search", {"q": warm, "mode": "keyword", "rerank": "off"})
        for query in queries:
            for enabled in (True, False):
                settings.SEARCH_LOG_ENABLED = enabled
                begun = time.perf_counter()
                response = client.get("/api/search", {"q": query, "mode": "keyword", "rerank": "off"})
                timings[enabled].append((time.perf_counter() - begun) * 1000)
                assert response.status_code == 200, response.content
                assert ("search_id" in response.json()) is enabled
    finally:
        store.drop_indices([f"{settings.ELASTICSEARCH_INDEX_PREFIX}*"])
    print(f"{len(queries)} searches each way (keyword, no rerank), {SearchLog.objects.count()} log rows written")
    print(f"log on   {percentiles(timings[True])}")
    print(f"log off  {percentiles(timings[False])}")
    p95 = np.percentile(timings[True], 95) - np.percentile(timings[False], 95)
    p50 = np.percentile(timings[True], 50) - np.percentile(timings[False], 50)
    print(f"on - off: p50 {p50:+.2f} ms, p95 {p95:+.2f} ms (target: p95 within 5 ms)")
    print(f"the log's listener alone: {percentiles(listener_ms[10:])} ({len(listener_ms) - 10} searches)")


if __name__ == "__main__":
    main()
