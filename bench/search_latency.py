"""Search latency: the HTTP API (web process + Elasticsearch + the real rerank worker) against the
same components called directly in one process. Not a test: it prints numbers and a ratio.

For each SciFact dev query (200 by default), in turn:
  API     GET /api/search?q=...&mode=semantic&collection=scifact&k=10 on a running server, timed by
          this client (end to end), with the server's own per-stage timings from the JSON;
  direct  in this process: encode the query (bi-encoder, no cache), the same Elasticsearch kNN
          request, and CrossEncoder.predict on the same (query, title + chunk) pairs.
Then p50/p95 of every stage and of the totals, and the ratio API p95 / direct p95 (target <= 1.15).

Set-up (the same environment for the server, the worker and this script):
    export ELASTICSEARCH_INDEX_PREFIX=searchbench CELERY_KEY_PREFIX=searchbench: \
           DATABASE_URL=sqlite:////tmp/search-bench/db.sqlite3 RERANKER_MODEL=<cross-encoder dir or id>
    .venv/bin/python manage.py migrate && .venv/bin/python manage.py import_corpus scifact ../shared/datasets/scifact --create --visibility public
    .venv/bin/celery -A searchsite worker -Q embed -c 1 &     # indexes the corpus
    .venv/bin/celery -A searchsite worker -Q rerank -c 1 &
    .venv/bin/gunicorn searchsite.wsgi -b 127.0.0.1:8032 -w 1 --threads 4 &
    .venv/bin/python bench/search_latency.py --url http://127.0.0.1:8032
"""
from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import sys
import time
import urllib.parse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")


def dev_queries(dataset: Path, split: str, limit: int) -> list[str]:
    with open(dataset / "qrels" / f"{split}.tsv") as f:
        ids = list(dict.fromkeys(row[0] for row in csv.reader(f, delimiter="\t") if row and row[0] != "query-id"))
    texts = {}
    with open(dataset / "queries.jsonl") as f:
        for line in f:
            query = json.loads(line)
            texts[query["_id"]] = query["text"]
    return [texts[i] for i in ids[:limit]]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Api:
    def __init__(self, url: str):
        parsed = urllib.parse.urlparse(url)
        self.host, self.port = parsed.hostname, parsed.port or 80

    def search(self, params: dict) -> tuple[float, dict]:
        """One request on a new connection (servers close idle keep-alive connections while
        the direct run of the same query takes its turn); the connect is part of the time."""
        path = "/api/search?" + urllib.parse.urlencode(params)
        started = time.perf_counter()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=300)
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        conn.close()
        if response.status != 200:
            raise SystemExit(f"API answered {response.status}: {body[:300]!r}")
        return elapsed, json.loads(body)


def direct(query: str, collection, mode: str, candidates: int) -> dict:
    """The same components in this process: encode, Elasticsearch, CrossEncoder.predict."""
    from django.conf import settings

    from indexer.lookups import serving
    from indexer.store import alias_name, get_client
    from reranker.cross_encoder import configured_model, score_passages
    from search.query_vectors import encode_queries
    from search.retrieval import add_highlights, es_filters, keyword_body, keyword_query, semantic_body, to_hit

    timings = {}
    started = time.perf_counter()
    model_id, language = serving(collection)
    languages = {collection.slug: language}
    filters = es_filters([collection.slug], {})
    if mode == "semantic":
        vector = encode_queries([query], model_id)[0]
        timings["embed"] = (time.perf_counter() - started) * 1000
        body = semantic_body(query, vector, filters, settings.SEARCH_DEPTH)
    else:
        timings["embed"] = 0.0
        body = keyword_body(query, filters, settings.SEARCH_DEPTH, keyword_query(query, languages))
    t = time.perf_counter()
    raw = get_client().search(index=alias_name(collection.slug), **body)["hits"]["hits"]
    hits = [to_hit(h) for h in raw]
    add_highlights(hits, query, languages)  # the API's snippets are part of its first stage
    timings["elasticsearch"] = (time.perf_counter() - t) * 1000
    hits = hits[:candidates]
    t = time.perf_counter()
    score_passages(configured_model(collection.reranker_model), query,
                [f"{h.title}\n{h.text}" if h.title else h.text for h in hits])
    timings["rerank"] = (time.perf_counter() - t) * 1000
    timings["total"] = (time.perf_counter() - started) * 1000
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8032")
    parser.add_argument("--collection", default="scifact")
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "datasets" / "scifact")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--mode", default="semantic", choices=["semantic", "keyword"])
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings

    from indexer.models import Collection

    collection = Collection.objects.get(slug=args.collection)
    queries = dev_queries(args.dataset, args.split, args.queries)
    warmup = dev_queries(args.dataset, "train", args.warmup)
    api = Api(args.url)
    params = lambda q: {"q": q, "mode": args.mode, "collection": collection.slug, "k": 10}  # noqa: E731

    for query in warmup:  # load the models in the server, the worker and here
        api.search(params(query))
        direct(query, collection, args.mode, settings.RERANK_TOP_N)

    api_rows, direct_rows, degraded, depths, runtimes = [], [], [], [], {}
    from tqdm import tqdm

    for query in tqdm(queries, desc="queries", unit="q"):
        elapsed, body = api.search(params(query))
        reranked = body["rerank"]["applied"]
        if reranked:
            depths.append(body["rerank"]["reranked"])
            name = f"{body['rerank']['runtime']} {body['rerank']['precision']}"
            runtimes[name] = runtimes.get(name, 0) + 1
        else:
            degraded.append(body["not_reranked"])
        api_rows.append({**body["timings_ms"], "end_to_end": elapsed, "reranked": reranked})
        # The same work as the API did: as many pairs as it reranked (its budget's share when
        # it did not rerank, so that the direct side still shows what scoring them costs).
        direct_rows.append({**direct(query, collection, args.mode, body["rerank"]["candidates"] or 1),
                            "reranked": reranked})

    def table(name, rows, keys):
        print(f"\n{name} ({len(rows)} queries)")
        print(f"  {'stage':<16}{'p50 ms':>10}{'p95 ms':>10}")
        for key in keys:
            values = [r[key] for r in rows]
            print(f"  {key:<16}{pct(values, 50):>10.1f}{pct(values, 95):>10.1f}")

    print(f"\nmode={args.mode} collection={collection.slug} depth={settings.SEARCH_DEPTH} "
          f"rerank top {settings.RERANK_TOP_N} RERANKER_MODEL={settings.RERANKER_MODEL or '(collection)'}")
    table("API (server-reported stages; end_to_end timed by this client)", api_rows,
          ["embed", "elasticsearch", "rerank", "total", "end_to_end"])
    table("direct, one process", direct_rows, ["embed", "elasticsearch", "rerank", "total"])
    share = sum(r["reranked"] for r in api_rows) / len(api_rows)
    print(f"\nreranked by the API: {share:.1%} of {len(api_rows)} queries; rerank stage p95 "
          f"{pct([r['rerank'] for r in api_rows if r['reranked']], 95):.1f} ms; chunks reranked per query: "
          f"min {min(depths, default=0)}, median {int(np.median(depths)) if depths else 0}, max {max(depths, default=0)}; "
          f"runtime: {', '.join(f'{k} ({v})' for k, v in runtimes.items()) or 'none'}")
    if degraded:
        reasons = {}
        for reason in degraded:
            reasons[reason] = reasons.get(reason, 0) + 1
        print("not reranked: " + "; ".join(f"{n} × {reason}" for reason, n in reasons.items()))
    both = [(a, d) for a, d in zip(api_rows, direct_rows) if a["reranked"]]
    if not both:
        print("ratio API/direct: NOT COMPARED (no query was reranked by the API, so the two sides did different work)")
        return
    api_p95, direct_p95 = pct([a["end_to_end"] for a, _ in both], 95), pct([d["total"] for _, d in both], 95)
    api_p50, direct_p50 = pct([a["end_to_end"] for a, _ in both], 50), pct([d["total"] for _, d in both], 50)
    scope = f"over the {len(both)} queries reranked on both sides"
    print(f"ratio p50 API/direct: {api_p50 / direct_p50:.3f} ({scope})")
    print(f"ratio p95 API/direct: {api_p95 / direct_p95:.3f} ({scope}; target <= 1.15: "
          f"{'met' if api_p95 <= 1.15 * direct_p95 else 'NOT met'})")


if __name__ == "__main__":
    main()
