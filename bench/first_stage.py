"""First-stage quality of embedding models on the shared data sets, through the real stack (not a
test): each (data set, model) is imported as a collection, indexed by a real `embed` worker,
scored by `manage.py evaluate` on the dev judgments, and its semantic and keyword candidate lists
for the train and dev queries are written out, for bench/fusion_choice.py to choose the hybrid
fusion on train queries.

    .venv/bin/python bench/first_stage.py --set scifact --set nfcorpus --set cmrc2018-zh \\
        --model all-MiniLM-L6-v2 --model default [--out var/bench/first-stage] [--limit-train N]

`default` is the model a new collection of the set's language gets (EMBEDDING_MODEL for en,
EMBEDDING_MODEL_ZH for zh). Catalogue models must be installed first (`make models`). Like
bench/indexing.py it runs against its own index prefix, Redis key prefix and SQLite file, never
the development data; the CPU flags and the runtime are printed first, since every figure holds
for that machine only.
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
RUN = secrets.token_hex(3)
TMP = Path(tempfile.mkdtemp(prefix=f"bench-first-stage-{RUN}-"))
os.environ["ELASTICSEARCH_INDEX_PREFIX"] = f"bench-{RUN}"
os.environ["CELERY_KEY_PREFIX"] = f"bench-{RUN}:"
os.environ["DATABASE_URL"] = f"sqlite:///{TMP / 'bench.sqlite3'}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# Every semantic and keyword candidate is kept, so the fusion can be chosen afterwards.
os.environ.setdefault("SEARCH_RATE_LIMIT_ENABLED", "false")

DATASETS = ROOT.parent / "shared" / "datasets"
LANGUAGE = {"cmrc2018-zh": "zh"}
DEPTH = 100


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", required=True, help="a folder of ../shared/datasets")
    parser.add_argument("--model", action="append", required=True, help="a model id, or `default`")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "first-stage")
    parser.add_argument("--limit-train", type=int, default=0, help="train queries dumped (0: all)")
    return parser.parse_args()


def cpu_line() -> str:
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        name = platform.processor()
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    return f"{name}, {os.cpu_count()} cores, flags: {' '.join(shown) or 'none of avx2/avx512/amx'}"


def start_worker() -> subprocess.Popen:
    from searchsite.celery import app

    name = f"bench-{RUN}@{platform.node()}"
    log = open(TMP / "worker.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "searchsite", "worker", "-Q", "embed", "-c", "1",
                             "-n", name, "-l", "warning", "--without-gossip", "--without-mingle"],
                            cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"worker exited; see {TMP / 'worker.log'}")
        if app.control.ping(destination=[name], timeout=0.5):
            return proc
    raise SystemExit("worker did not start in 180 s")


def wait_indexed(collection, timeout: float = 7200) -> None:
    from indexer.models import Document

    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        left = Document.objects.filter(collection=collection).exclude(status=Document.Status.INDEXED)
        failed = left.filter(status=Document.Status.FAILED).first()
        if failed:
            raise SystemExit(f"document {failed} failed: {failed.last_error}")
        count = left.count()
        if not count:
            return
        if count != last:
            print(f"  {collection.slug}: {count} documents left", flush=True)
            last = count
        time.sleep(5)
    raise SystemExit("timed out waiting for the pipeline")


def read_queries(folder: Path, split: str) -> dict[str, str]:
    from relevance.judgments import read_qrels, read_queries as read_all

    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
    texts = read_all(folder / "queries.jsonl", too_long={})  # the empty or too long ones left out
    return {qid: texts[qid] for qid in qrels if qid in texts}


def dump_lists(collection, queries: dict[str, str]) -> dict:
    """Each query's semantic and keyword chunks (document, chunk, score), best first."""
    from search.offline import encoded_in_batches, first_stage_hits

    qids = list(queries)
    lists = {}
    for qid, text in zip(qids, encoded_in_batches(collection, [queries[q] for q in qids])):
        lists[qid] = {mode: [[h.external_id, h.chunk, round(h.score, 6)]
                             for h in first_stage_hits(collection, text, mode, DEPTH)]
                      for mode in ("semantic", "keyword")}
    return lists


def ndcg(result: dict) -> float:
    """nDCG@10 of one run of an evaluate report (metrics.json)."""
    for key, value in result.get("mean", result).items():
        if key.startswith("ndcg"):
            return float(value)
    raise KeyError(f"no nDCG in {sorted(result)}")


def main():
    args = parse_args()
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from indexer.embedding import load_embedding_model
    from indexer.models import Collection, default_embedding_model

    print(f"machine: {cpu_line()}")
    print(f"embedding runtime setting: {settings.EMBEDDING_RUNTIME} (OpenVINO runs float32: inference precision "
          "pinned to f32 whatever the CPU offers)")
    call_command("migrate", verbosity=0)
    worker = start_worker()
    args.out.mkdir(parents=True, exist_ok=True)
    table = []
    try:
        for name in args.set:
            folder = DATASETS / name
            language = LANGUAGE.get(name, "en")
            for model in args.model:
                model_id = default_embedding_model(language) if model == "default" else model
                encoder = load_embedding_model(model_id)
                slug = f"{name}-{model_id}".lower().replace("/", "-").replace(".", "-")[:90]
                print(f"{name} / {model_id} ({encoder.runtime} {encoder.precision}): importing", flush=True)
                collection = Collection.objects.create(name=slug, slug=slug, language=language,
                                                       embedding_model=model_id, visibility="public")
                started = time.perf_counter()
                call_command("import_corpus", slug, str(folder), format="beir", verbosity=0)
                wait_indexed(collection)
                seconds = time.perf_counter() - started
                output = TMP / f"eval-{slug}"
                call_command("evaluate", slug, queries=str(folder / "queries.jsonl"),
                             qrels=str(folder / "qrels" / "dev.tsv"), modes="keyword,semantic,hybrid",
                             output=str(output), verbosity=0)
                metrics = json.loads((output / "metrics.json").read_text())
                dumps = {"set": name, "model": model_id, "language": language, "depth": DEPTH,
                         "index_seconds": round(seconds, 1), "metrics": metrics, "splits": {}}
                for split in ("train", "dev"):
                    if (folder / "qrels" / f"{split}.tsv").exists():
                        queries = read_queries(folder, split)
                        if split == "train" and args.limit_train:
                            queries = dict(list(queries.items())[:args.limit_train])
                        dumps["splits"][split] = dump_lists(collection, queries)
                path = args.out / f"{slug}.json"
                path.write_text(json.dumps(dumps))
                row = {"set": name, "model": model_id, "index s": round(seconds)}
                for mode in ("keyword", "semantic", "hybrid"):
                    row[mode] = ndcg(metrics["results"][mode]["first stage"])
                table.append(row)
                print(json.dumps(row), flush=True)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        if not os.environ.get("BENCH_KEEP"):
            from indexer.store import get_store

            try:
                get_store().drop_indices([f"{os.environ['ELASTICSEARCH_INDEX_PREFIX']}-*"])
            except Exception as exc:  # noqa: BLE001  (clean-up: say so, keep the results)
                print(f"clean-up of the bench-{RUN}-* indices failed: {exc}", file=sys.stderr)
            shutil.rmtree(TMP, ignore_errors=True)
    print()
    print(f"nDCG@10 on dev, {cpu_line()}")
    print(f"{'set':14} {'model':40} {'keyword':>8} {'semantic':>9} {'hybrid':>8} {'index s':>8}")
    for row in table:
        print(f"{row['set']:14} {row['model']:40} {row['keyword']:8.4f} {row['semantic']:9.4f} {row['hybrid']:8.4f} "
              f"{row['index s']:8}")


if __name__ == "__main__":
    main()
