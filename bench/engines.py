"""Engines side by side (not a test): the same chunks, vectors and queries written to and searched
in each engine through indexer/store.py, with the query bodies of search/retrieval.py.

    .venv/bin/python bench/engines.py [--engines elasticsearch,opensearch] [--limit N] [--queries N]

Both engines must be running (`python3 scripts/services.py start` and `start opensearch`).
SciFact (or --corpus) is chunked and encoded once, in this process, as the pipeline does
(indexer/pipeline.py plan_chunks, encode_chunks, chunk_source: language `en`, so BM25 runs on
the analysed terms). Then, per engine, into a fresh index (`--index-options`, default hnsw: the
layout both engines offer, so that the HNSW searches compare):

  write      every chunk through Store.write_chunks (bulk, 500 a request) and one refresh:
             chunks per second (encoding is engine-independent and left out);
  latency    per dev query and mode, the engine round trip of the first stage (Store.msearch of
             the bodies search/retrieval.py builds: kNN, BM25, both in one msearch for hybrid):
             p50/p95 in ms;
  recall@10  of the kNN search (k 10, SEARCH_NUM_CANDIDATES candidates, the collection filter)
             against the exact cosine top 10 over the same vectors;
  nDCG@10    per mode on the dev judgments (documents ranked by their best chunk; hybrid fused
             by search.retrieval.fuse). With --limit N the corpus is the first N documents
             plus every document judged for the dev queries: a smaller, easier corpus than the
             whole one, the same for both engines.

The engines are queried in turns, query by query (the machine may be shared).

Indices are named `<ELASTICSEARCH_INDEX_PREFIX>-engines-<run>` and deleted at the end.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RUN = secrets.token_hex(3)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SLUG = "bench-engines"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="elasticsearch,opensearch")
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "datasets" / "scifact")
    parser.add_argument("--limit", type=int, help="the first N documents and those judged for the dev queries "
                                                  "(nDCG of that smaller corpus is higher than the full one's)")
    parser.add_argument("--queries", type=int, help="first N dev queries (default: all)")
    parser.add_argument("--index-options", default="hnsw")
    parser.add_argument("--warmup", type=int, default=5, help="train queries run first, untimed")
    args = parser.parse_args()
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(args.engines) - {"elasticsearch", "opensearch"}
    if unknown or not args.engines:
        parser.error(f"--engines: elasticsearch and/or opensearch, not {sorted(unknown) or 'nothing'}")
    return args


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with open(path) as f:
        for line in f:
            rows.append(json.loads(line))
            if limit and len(rows) >= limit:
                break
    return rows


def read_queries(corpus: Path, split: str, limit: int | None) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(corpus / "qrels" / f"{split}.tsv") as f:
        for row in csv.reader(f, delimiter="\t"):
            if row and row[0] != "query-id":
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    texts = {q["_id"]: q["text"] for q in read_jsonl(corpus / "queries.jsonl")}
    ids = list(qrels)[:limit] if limit else list(qrels)
    return {i: texts[i] for i in ids}, {i: qrels[i] for i in ids}


def pct(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return f"{cpu}, {os.cpu_count()} CPUs, load average {load[0]:.1f} at the start"


def main():
    args = parse_args()
    import django

    django.setup()
    import numpy as np
    from django.conf import settings

    from indexer.embedding import load_embedding_model
    from indexer.models import Collection, Document
    from indexer.pipeline import chunk_source, encode_chunks, plan_chunks
    from indexer.store import ChunkWrite, get_store
    from reranker.metrics import ndcg_at_k
    from search.retrieval import (MODES, default_fusion, es_filters, fuse, keyword_body, keyword_query, semantic_body,
                                  to_hit)

    model_id = settings.EMBEDDING_MODEL
    print(f"machine: {machine()}")
    collection = Collection(name=SLUG, slug=SLUG, language="en")
    docs = []
    queries, qrels = read_queries(args.corpus, "dev", args.queries)
    judged = {doc for judgments in qrels.values() for doc in judgments}
    rows = read_jsonl(args.corpus / "corpus.jsonl")
    if args.limit:  # the first N documents and every judged one, so that nDCG still means something
        rows = [row for i, row in enumerate(rows) if i < args.limit or str(row["_id"]) in judged]
    for i, row in enumerate(rows, 1):
        title, text = (row.get("title") or "")[:500], row["text"]
        docs.append(Document(pk=i, collection=collection, external_id=str(row["_id"]), title=title, text=text,
                             metadata={}, content_hash=Document.compute_hash(title, text, {})))
    planned = plan_chunks(docs, collection, model_id)
    started = time.perf_counter()
    vectors = encode_chunks(model_id, planned)
    print(f"corpus: {len(docs)} documents, {len(planned)} chunks, encoded once in "
          f"{time.perf_counter() - started:.0f} s ({model_id})", flush=True)
    titles: dict[int, str] = {}
    writes = [ChunkWrite(f"{SLUG}/{p.document.external_id}/{p.chunk.number}", chunk_source(p, v, "en", titles))
              for p, v in zip(planned, vectors)]
    external = {p.document.pk: p.document.external_id for p in planned}

    warmup, _ = read_queries(args.corpus, "train", args.warmup)
    model = load_embedding_model(model_id)
    qids = list(queries)
    qvec = model.encode_queries([queries[q] for q in qids])
    wvec = model.encode_queries(list(warmup.values()))
    exact = np.argsort(-(qvec @ vectors.T), axis=1)[:, :10]
    chunk_ids = [w.id for w in writes]
    print(f"queries: {len(qids)} dev queries ({sum(len(j) for j in qrels.values())} judgments), "
          f"depth {settings.SEARCH_DEPTH}, num_candidates {settings.SEARCH_NUM_CANDIDATES}", flush=True)

    filters = es_filters([SLUG], {})
    languages = {SLUG: "en"}

    def use(engine: str):
        settings.SEARCH_ENGINE = engine  # search.retrieval builds its kNN clause with get_store()
        get_store.cache_clear()
        return get_store()

    def searches(index: str, text: str, vector, mode: str) -> list[tuple[list[str], dict]]:
        out = []
        if mode in ("semantic", "hybrid"):
            out.append(([index], semantic_body(text, vector.tolist(), filters, settings.SEARCH_DEPTH)))
        if mode in ("keyword", "hybrid"):
            match = keyword_query(text, languages)
            if match is not None:
                out.append(([index], keyword_body(text, filters, settings.SEARCH_DEPTH, match)))
        return out

    indices = {engine: f"{settings.ELASTICSEARCH_INDEX_PREFIX}-engines-{RUN}-{engine}" for engine in args.engines}
    results = {engine: {} for engine in args.engines}
    latency = {engine: {mode: [] for mode in MODES} for engine in args.engines}
    ndcg = {engine: {mode: [] for mode in MODES} for engine in args.engines}
    found = dict.fromkeys(args.engines, 0)
    try:
        for engine, index in indices.items():
            store = use(engine)
            store.create_index(index, dims=vectors.shape[1], model_id=model_id, index_options=args.index_options,
                               language="en")
            started = time.perf_counter()
            for i in range(0, len(writes), 500):
                store.write_chunks(index, writes[i:i + 500])
            store.refresh(index)
            seconds = time.perf_counter() - started
            results[engine].update(version=", ".join(store.health(10).versions), write_s=seconds,
                                   chunks_per_s=len(writes) / seconds)
            print(f"{engine}: {len(writes)} chunks written and refreshed in {seconds:.1f} s", flush=True)
            for text, vector in zip(warmup.values(), wvec):
                for mode in MODES:
                    store.msearch(searches(index, text, vector, mode))
        # The engines take turns query by query, so that a change in the machine's load (it is
        # shared) falls on both alike.
        for row, (qid, vector) in enumerate(zip(qids, qvec)):
            for engine, index in indices.items():
                store = use(engine)
                for mode in MODES:
                    batch = searches(index, queries[qid], vector, mode)
                    t = time.perf_counter()
                    lists = store.msearch(batch)
                    latency[engine][mode].append((time.perf_counter() - t) * 1000)
                    hits = [[to_hit(raw) for raw in answer["hits"]["hits"]] for answer in lists]
                    if mode == "hybrid":
                        ranked = fuse(hits[0], hits[1] if len(hits) > 1 else [], default_fusion("en")[0],
                                      settings.SEARCH_DEPTH)
                    else:
                        ranked = hits[0] if hits else []
                    ndcg[engine][mode].append(ndcg_at_k([external[h.document_id] for h in ranked], qrels[qid], 10))
                knn = {**store.knn_search_body(vector.tolist(), k=10, num_candidates=settings.SEARCH_NUM_CANDIDATES,
                                               filters=filters), "size": 10, "_source": False}
                top = {h["_id"] for h in store.msearch([([index], knn)])[0]["hits"]["hits"]}
                found[engine] += len(top & {chunk_ids[j] for j in exact[row]})
    finally:
        for engine, index in indices.items():
            use(engine).delete_index(index)
    for engine in args.engines:
        results[engine].update({
            "recall@10": found[engine] / (10 * len(qids)),
            **{f"{mode} p50 ms": pct(latency[engine][mode], 50) for mode in MODES},
            **{f"{mode} p95 ms": pct(latency[engine][mode], 95) for mode in MODES},
            **{f"{mode} nDCG@10": float(np.mean(ndcg[engine][mode])) for mode in MODES},
        })

    names = list(results)
    header = " | ".join(f"{n} {results[n]['version']}" for n in names)
    print(f"\n| | {header} |"
          + (" ratio |" if len(names) == 2 else ""))
    print("|---" * (len(names) + 1 + (len(names) == 2)) + "|")
    for key in [k for k in results[names[0]] if k != "version"]:
        cells = " | ".join(f"{results[n][key]:.3f}" if "nDCG" in key or "recall" in key else f"{results[n][key]:.1f}"
                           for n in names)
        ratio = (f" {results[names[1]][key] / results[names[0]][key]:.2f} |"
                 if len(names) == 2 and results[names[0]][key] else (" |" if len(names) == 2 else ""))
        print(f"| {key} | {cells} |{ratio}")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
