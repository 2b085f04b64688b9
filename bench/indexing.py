"""Indexing benchmark (not a test): raw encoding vs the whole pipeline, and kNN recall.

    .venv/bin/python bench/indexing.py [--engine elasticsearch|opensearch] [--limit N] [--encode-only] [--corpus DIR]
        [--baseline all-MiniLM-L6-v2 --baseline-runtime torch]

1. Raw: `model.encode` over exactly the chunk texts the pipeline produces for the corpus
   (indexer.pipeline.plan_chunks: same model, device, batch size, normalised output).
2. End to end: a real `embed` Celery worker; from enqueueing every document to every chunk being
   searchable after a refresh (statuses `indexed`, count checked). Prints both throughputs and
   their ratio (target: end-to-end >= 0.90 x raw).
With --baseline, step 1 also encodes the same documents with a second model on its runtime, each
model in its own process, the two taking turns block by block (a shared machine's load falls on
both alike), and prints
documents per second of each and their ratio, and the query embedding latency (one query at a
time, as a search embeds it) of the default model.
3. Recall@10 of the engine's kNN against exact cosine top-10 for 300 queries, for each
   `index_options` type the engine offers, over the same vectors.

`--engine` picks the engine (SEARCH_ENGINE, also for the worker it starts); default: the
settings' (elasticsearch).

It runs against its own index prefix, Redis key prefix and SQLite file (all removed at the end),
never the development data. `--encode-only` needs no Elasticsearch, Redis or database (for a GPU
machine: step 1 only).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The encoding processes of the side-by-side step (spawned, so they import this module again)
# take the parent's run id and scratch folder from the environment.
RUN = os.environ.setdefault("BENCH_INDEXING_RUN", secrets.token_hex(3))
TMP = Path(os.environ.get("BENCH_INDEXING_TMP") or tempfile.mkdtemp(prefix=f"bench-indexing-{RUN}-"))
os.environ["BENCH_INDEXING_TMP"] = str(TMP)
# Isolation, before Django reads its settings.
os.environ["ELASTICSEARCH_INDEX_PREFIX"] = f"bench-{RUN}"
os.environ["CELERY_KEY_PREFIX"] = f"bench-{RUN}:"
os.environ["DATABASE_URL"] = f"sqlite:///{TMP / 'bench.sqlite3'}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LOG_LEVEL", "INFO")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "datasets" / "scifact",
                        help="BEIR folder with corpus.jsonl and queries.jsonl")
    parser.add_argument("--engine", choices=["elasticsearch", "opensearch"],
                        help="search engine (SEARCH_ENGINE); default: the environment's")
    parser.add_argument("--limit", type=int, help="first N documents only (a quick run)")
    parser.add_argument("--encode-only", action="store_true", help="step 1 only (no services needed)")
    parser.add_argument("--batch-size", type=int, help="encode batch size (default EMBEDDING_BATCH_SIZE)")
    parser.add_argument("--queries", type=int, default=300, help="queries for the recall measurement")
    parser.add_argument("--num-candidates", type=int, default=100, help="kNN num_candidates (k is 10)")
    parser.add_argument("--skip-recall", action="store_true")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--baseline", help="a second model encoded side by side in step 1 (e.g. all-MiniLM-L6-v2)")
    parser.add_argument("--baseline-runtime", default="torch", help="its EMBEDDING_RUNTIME (default torch)")
    parser.add_argument("--dump-texts", type=Path,
                        help="write the chunk texts (.jsonl.gz) for bench/encode_texts.py on another machine "
                             "(with --encode-only: only that)")
    return parser.parse_args()


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
                if limit and len(rows) >= limit:
                    break
    return rows


def machine() -> str:
    import torch

    from common.cpu import cpu_line
    from common.precision import pick_device
    from django.conf import settings

    device = pick_device(settings.EMBEDDING_DEVICE)
    gpu = f", {torch.cuda.get_device_name(0)}" if device.startswith("cuda") else ""
    return (f"{cpu_line()}, torch {torch.__version__} ({torch.get_num_threads()} threads), device {device}{gpu}; "
            f"EMBEDDING_RUNTIME={settings.EMBEDDING_RUNTIME} (OpenVINO float32 is pinned to f32 inference, bf16 unused)")


def make_documents(collection, corpus: list[dict], save: bool):
    from indexer.models import Document

    docs = []
    for i, row in enumerate(corpus, 1):
        metadata = row.get("metadata") or {}
        title, text = (row.get("title") or "")[:500], row["text"]
        docs.append(Document(pk=None if save else i, collection=collection, external_id=str(row["_id"]),
                             title=title, text=text, metadata=metadata,
                             content_hash=Document.compute_hash(title, text, metadata)))
    if save:
        Document.objects.bulk_create(docs, batch_size=500)
        docs = list(Document.objects.filter(collection=collection).order_by("pk"))
    return docs


def raw_encode(planned, model_id: str, batch_size: int):
    """Step 1: the chunk texts of the pipeline, encoded by the model alone."""
    import numpy as np

    from indexer.embedding import load_embedding_model

    model = load_embedding_model(model_id)
    texts = [p.embed_text for p in planned]
    model.encode_documents(texts[:batch_size], batch_size=batch_size)  # warm-up
    started = time.perf_counter()
    vectors = model.encode_documents(texts, batch_size=batch_size)
    seconds = time.perf_counter() - started
    return np.asarray(vectors, dtype=np.float32), seconds


def encoding_process(conn, model_id: str, runtime: str | None, blocks: list[list[str]], queries: list[str],
                     batch_size: int) -> None:
    """One model in its own process, as an embed worker holds one: it encodes the block of texts
    it is sent and answers the seconds; "queries" answers one-at-a-time query latencies (ms)."""
    import django

    django.setup()
    from indexer.embedding import load_embedding_model

    model = load_embedding_model(model_id, runtime=runtime)
    model.encode_documents(blocks[0][:batch_size], batch_size=batch_size)  # warm-up
    conn.send((model.runtime, model.precision))
    while (task := conn.recv()) is not None:
        if task == "queries":
            latencies = []
            for query in queries:
                started = time.perf_counter()
                model.encode_queries([query])
                latencies.append((time.perf_counter() - started) * 1000)
            conn.send(latencies)
        else:
            started = time.perf_counter()
            model.encode_documents(blocks[task], batch_size=batch_size)
            conn.send(time.perf_counter() - started)


def side_by_side(docs, collection, model_id: str, baseline: str, baseline_runtime: str, batch_size: int,
                 blocks: int = 8) -> None:
    """Documents per second of the default model (its runtime as EMBEDDING_RUNTIME says) and of
    `baseline` on `baseline_runtime`, each in its own process (two runtimes in one process disturb
    each other's threads), block by block in turns; then query latency."""
    import multiprocessing

    import numpy as np

    from indexer.pipeline import plan_chunks

    names = {"default": model_id, "baseline": baseline}
    runtimes = {"default": None, "baseline": baseline_runtime}
    per_block = -(-len(docs) // blocks)
    block_of = {id(doc): i // per_block for i, doc in enumerate(docs)}
    queries = [d.title or d.text[:120] for d in docs[:200]]
    context = multiprocessing.get_context("spawn")
    processes, pipes, chunks = {}, {}, {}
    try:
        for name in names:
            # Each model cuts its own chunks (its tokenizer and token limit); blocks of documents are the same.
            planned = plan_chunks(docs, collection, names[name])
            chunks[name] = len(planned)
            texts = [[] for _ in range(blocks)]
            for item in planned:
                texts[block_of[id(item.document)]].append(item.embed_text)
            pipes[name], child = context.Pipe()
            processes[name] = context.Process(target=encoding_process, daemon=True,
                                              args=(child, names[name], runtimes[name], texts, queries, batch_size))
            processes[name].start()
        loaded = {name: pipes[name].recv() for name in names}
        seconds = {name: 0.0 for name in names}
        for block in range(blocks):
            for name in names:
                pipes[name].send(block)
                seconds[name] += pipes[name].recv()
        pipes["default"].send("queries")
        latencies = pipes["default"].recv()
    finally:
        for name, process in processes.items():
            if process.is_alive():
                pipes[name].send(None)
                process.join(30)
    rate = {name: len(docs) / seconds[name] for name in names}
    for name in names:
        runtime, precision = loaded[name]
        print(f"{name:8s} {names[name]:22s} {runtime} {precision}: {chunks[name]} chunks, "
              f"{seconds[name]:7.1f} s, {rate[name]:6.1f} documents/s")
    print(f"ratio documents/s {model_id} / {baseline}: {rate['default'] / rate['baseline']:.2f}  (target >= 1.0)")
    p50, p95 = np.percentile(latencies, 50), np.percentile(latencies, 95)
    print(f"query embedding, {model_id}, one at a time, {len(queries)} queries: p50 {p50:.1f} ms, p95 {p95:.1f} ms "
          "(target p95 <= 30 ms)", flush=True)


def start_worker() -> tuple[subprocess.Popen, str]:
    log = open(TMP / "worker.log", "ab")
    name = f"bench-{RUN}@{platform.node()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "searchsite", "worker", "-Q", "embed", "-c", "1", "-n", name,
         "-l", "info", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    from searchsite.celery import app

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"worker exited; see {TMP / 'worker.log'}")
        if app.control.ping(destination=[name], timeout=0.5):
            return proc, name
    raise SystemExit("worker did not start in 120 s")


def wait_indexed(collection, timeout: float = 3600) -> None:
    from indexer.models import Document

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = Document.objects.filter(collection=collection).exclude(status=Document.Status.INDEXED)
        if not left.exists():
            return
        if left.filter(status=Document.Status.FAILED).exists():
            failed = left.filter(status=Document.Status.FAILED).first()
            raise SystemExit(f"document {failed} failed: {failed.last_error}")
        time.sleep(0.25)
    raise SystemExit("timed out waiting for the pipeline")


def end_to_end(collection, docs, expected_chunks: int) -> float:
    """Step 2: enqueue -> every chunk searchable after refresh, through a real worker."""
    from django.db import transaction

    from indexer.store import alias_name, get_store
    from indexer.tasks import queue_for_indexing
    from indexer.models import Collection

    store = get_store()
    # Warm-up outside the clock: the worker loads the model and the live index is created.
    warm = Collection.objects.create(name="warm-up", slug="warm-up")
    warm_docs = make_documents(warm, [{"_id": "w", "title": "warm", "text": "warm up the worker"}], save=True)
    with transaction.atomic():
        queue_for_indexing([d.pk for d in warm_docs])
    wait_indexed(warm, timeout=300)

    started = time.perf_counter()
    with transaction.atomic():
        queue_for_indexing([d.pk for d in docs])
    wait_indexed(collection)
    alias = alias_name(collection.slug)
    store.refresh(alias)
    seconds = time.perf_counter() - started
    count = store.count(alias)
    if count != expected_chunks:
        raise SystemExit(f"the index holds {count} chunks, the plan says {expected_chunks}")
    return seconds


def recall(vectors, planned, queries: list[str], model_id: str, num_candidates: int) -> dict[str, float]:
    """Step 3: recall@10 of kNN under each index_options against exact cosine top-10."""
    import numpy as np

    from indexer.embedding import load_embedding_model
    from indexer.store import ChunkWrite, get_store

    store = get_store()
    model = load_embedding_model(model_id)
    q = model.encode_queries(queries)
    exact = np.argsort(-(q @ vectors.T), axis=1)[:, :10]
    results = {}
    for options in store.index_option_types:
        index = f"{os.environ['ELASTICSEARCH_INDEX_PREFIX']}-recall-{options.replace('_', '-')}"
        store.create_index(index, dims=vectors.shape[1], model_id=model_id, index_options=options, language="none")
        started = time.perf_counter()
        store.write_chunks(index, [ChunkWrite(str(i), {
            "document_id": p.document.pk, "chunk": p.chunk.number, "text": p.chunk.text,
            "embedding": v.tolist()}) for i, (p, v) in enumerate(zip(planned, vectors))])
        store.refresh(index)
        load_seconds = time.perf_counter() - started
        hits_total, latencies = 0, []
        for row, vector in enumerate(q):
            body = {**store.knn_search_body(vector.tolist(), k=10, num_candidates=num_candidates, filters=[]),
                    "size": 10, "_source": False}
            t = time.perf_counter()
            hits = store.msearch([([index], body)])[0]["hits"]["hits"]
            latencies.append(time.perf_counter() - t)
            hits_total += len({int(h["_id"]) for h in hits} & set(exact[row].tolist()))
        results[options] = hits_total / (10 * len(q))
        print(f"  {options:10s} recall@10 {results[options]:.4f}   (bulk+refresh {load_seconds:.1f}s, "
              f"kNN p50 {1000 * sorted(latencies)[len(latencies) // 2]:.1f} ms)", flush=True)
        store.delete_index(index)
    return results


def main():
    args = parse_args()
    if args.engine:
        os.environ["SEARCH_ENGINE"] = args.engine  # before Django reads it; the worker inherits it
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from indexer.models import Collection

    model_id = settings.EMBEDDING_MODEL
    batch_size = args.batch_size or settings.EMBEDDING_BATCH_SIZE
    corpus = read_jsonl(args.corpus / "corpus.jsonl", args.limit)
    print(f"machine: {machine()}; engine: {settings.SEARCH_ENGINE}")
    print(f"corpus: {len(corpus)} documents from {args.corpus}; model {model_id}; batch size {batch_size}")

    worker = None
    try:
        if args.encode_only:
            collection = Collection(name="bench", slug="bench")
            docs = make_documents(collection, corpus, save=False)
        else:
            call_command("migrate", verbosity=0)
            collection = Collection.objects.create(name="bench", slug="bench")
            docs = make_documents(collection, corpus, save=True)
        from indexer.pipeline import plan_chunks

        planned = plan_chunks(docs, collection, model_id)
        chunks = len(planned)
        if args.dump_texts:
            import gzip

            args.dump_texts.parent.mkdir(parents=True, exist_ok=True)
            with gzip.open(args.dump_texts, "wt", encoding="utf-8") as f:
                for item in planned:
                    f.write(json.dumps({"text": item.embed_text}) + "\n")
            print(f"wrote {chunks} chunk texts to {args.dump_texts}")
            if args.encode_only:
                return
        if args.baseline:
            side_by_side(docs, collection, model_id, args.baseline, args.baseline_runtime, batch_size)
        vectors, raw_seconds = raw_encode(planned, model_id, batch_size)
        raw_rate = chunks / raw_seconds
        print(f"chunks: {chunks} ({chunks / len(docs):.2f} per document)")
        print(f"raw model.encode:      {raw_seconds:8.1f} s  {raw_rate:8.1f} chunks/s")
        if args.encode_only:
            return
        if not args.skip_e2e:
            worker, _ = start_worker()
            e2e_seconds = end_to_end(collection, docs, chunks)
            e2e_rate = chunks / e2e_seconds
            print(f"end-to-end pipeline:   {e2e_seconds:8.1f} s  {e2e_rate:8.1f} chunks/s "
                  f"({len(docs) / e2e_seconds:.1f} docs/s)")
            print(f"ratio end-to-end / raw: {e2e_rate / raw_rate:.3f}  (target >= 0.90)", flush=True)
            os.killpg(worker.pid, 15)
            worker.wait(60)
            worker = None
            stage_breakdown(e2e_seconds, raw_seconds, settings.INDEX_BATCH_SIZE)
        if not args.skip_recall:
            queries = [q["text"] for q in read_jsonl(args.corpus / "queries.jsonl", args.queries)]
            print(f"kNN recall@10 vs exact cosine, {len(queries)} queries, k=10, "
                  f"num_candidates={args.num_candidates}, {chunks} vectors:")
            results = recall(vectors, planned, queries, model_id, args.num_candidates)
            best = max(results, key=results.get)
            print(f"best recall: {best}")
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, 9)
        cleanup()


def stage_breakdown(e2e_seconds: float, raw_seconds: float, docs_per_task: int) -> None:
    """Where the end-to-end time went, from the worker's per-task log lines (indexer/pipeline.py)."""
    import re

    pattern = re.compile(r"chunking ([0-9.]+)s, encoding ([0-9.]+)s, analysis \([^)]*\) ([0-9.]+)s, writing ([0-9.]+)s")
    totals, tasks = [0.0, 0.0, 0.0, 0.0], 0
    for line in (TMP / "worker.log").read_text(errors="replace").splitlines():
        match = pattern.search(line)
        if match and "warm-up" not in line:
            tasks += 1
            totals = [t + float(x) for t, x in zip(totals, match.groups())]
    chunking, encoding, analysis, writing = totals
    if not tasks:
        print("worker: no per-task timing line found in its log (indexer/pipeline.py's format changed?)")
        return
    print(f"worker, {tasks} tasks of up to {docs_per_task} documents: chunking {chunking:.1f} s, encoding "
          f"{encoding:.1f} s (raw {raw_seconds:.1f} s), keyword analysis {analysis:.1f} s, bulk writing {writing:.1f} s; "
          f"the rest (queue, database "
          f"statuses, refresh) {e2e_seconds - sum(totals):.1f} s")


def cleanup():
    """Remove everything this run created: indices, Redis keys, the SQLite file."""
    if not os.environ.get("BENCH_KEEP"):
        try:
            import redis
            from django.conf import settings

            from indexer.store import get_store

            get_store().drop_indices([f"{os.environ['ELASTICSEARCH_INDEX_PREFIX']}-*"])
            client = redis.Redis.from_url(settings.REDIS_URL)
            for key in client.scan_iter(match=f"{os.environ['CELERY_KEY_PREFIX']}*", count=1000):
                client.delete(key)
        except Exception as exc:  # services absent (--encode-only elsewhere): nothing was created
            print(f"cleanup: {type(exc).__name__}: {exc}", file=sys.stderr)
        shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
