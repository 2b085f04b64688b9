"""Reranking runtimes side by side: the same model, the same pairs, in one run.

For each SciFact dev query: the top 50 chunks of the hybrid first stage (the project's own
search), as the search sends them to the reranker (title + chunk, truncated at the model's
token limit, at most --max-length). Each runtime scores each query's pairs in turn (the
runtimes interleave query by query, so a busy machine slows them alike), and is timed per query;
its logits reorder the head with the model's fusion, as the search does, for nDCG@10 on dev.

    torch-float32   the model in torch, float32 (what a CPU without bfloat16 ran before)
    torch-bfloat16  torch with bfloat16 autocast (only on CPUs with AVX512-BF16/AMX)
    openvino-float32  its OpenVINO export (reranker/openvino_export.py)
    openvino-int8     the int8 model NNCF calibrated (made when the model was trained on a CPU,
                      or by `manage.py export_reranker DIR --judge-on COLLECTION`)
    cuda-float16    torch on CUDA (when a GPU is present)

    .venv/bin/python bench/rerank.py [--collection scifact] [--model DIR] [--queries 200]

Needs the collection indexed (the first stage runs on Elasticsearch); the model defaults to the
collection's reranker. Prints the CPU and its flags first: a figure holds for that CPU only.
A newer CPU can stand in for an AVX2-only one by capping the libraries' instruction sets:

    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 .venv/bin/python bench/rerank.py \
        --runtimes torch-float32,openvino-float32,openvino-int8
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
# oneDNN (OpenVINO's CPU kernels, torch's) and MKL (torch's float32 matrix products) honour these.
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def cpu_description() -> str:
    model, flags = platform.processor() or "?", set()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name") and model in ("?", "", "x86_64"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    shown = " ".join(f"{flag}{'+' if flag in flags else '-'}" for flag in FLAGS)
    from reranker.scorers import usable_cores

    # A run can emulate an older CPU by capping the instruction sets the math libraries use.
    caps = [f"{name}={os.environ[name]}" for name in ISA_CAPS if os.environ.get(name)]
    capped = f"; instruction sets capped by {' '.join(caps)}" if caps else ""
    return f"CPU: {model}, {usable_cores()} usable cores; flags: {shown}{capped}"


def dev_judgments(dataset: Path, split: str) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(dataset / "qrels" / f"{split}.tsv") as handle:
        for row in csv.reader(handle, delimiter="\t"):
            if row and row[0] != "query-id":
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    texts = {}
    with open(dataset / "queries.jsonl") as handle:
        for line in handle:
            query = json.loads(line)
            if query["_id"] in qrels:
                texts[query["_id"]] = query["text"]
    return texts, qrels


def scorers(model_dir: str, max_length: int, threads: int, wanted: list[str]) -> dict:
    """name -> scorer (reranker/scorers.py), for each runtime this machine has."""
    import torch
    from sentence_transformers import CrossEncoder

    from reranker.openvino_export import export
    from common.precision import cpu_has_native_bf16
    from reranker.scorers import OpenVinoScorer, TorchScorer

    torch.set_num_threads(threads)
    out = {}
    cpu_model = CrossEncoder(model_dir, device="cpu")
    limit = min(max_length, cpu_model.tokenizer.model_max_length or max_length)
    cpu_model.max_seq_length = limit
    cpu_model.eval()
    if "torch-float32" in wanted:
        out["torch-float32"] = TorchScorer(cpu_model, "float32", 32)
    if "torch-bfloat16" in wanted and cpu_has_native_bf16():
        out["torch-bfloat16"] = TorchScorer(cpu_model, "bfloat16", 32)
    if {"openvino-float32", "openvino-int8"} & set(wanted):
        state = export(model_dir)
        if "openvino-float32" in wanted:
            out["openvino-float32"] = OpenVinoScorer(model_dir, False, limit, 32, threads)
        if "openvino-int8" in wanted and state.has_int8:
            out["openvino-int8"] = OpenVinoScorer(model_dir, True, limit, 32, threads)
        elif "openvino-int8" in wanted:
            print(f"openvino-int8 left out: {state.int8_reason}")
    if "cuda-float16" in wanted and torch.cuda.is_available():
        gpu_model = CrossEncoder(model_dir, device="cuda")
        gpu_model.max_seq_length = limit
        gpu_model.half().eval()
        out["cuda-float16"] = TorchScorer(gpu_model, "float16", 64)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collection", default="scifact")
    parser.add_argument("--model", help="cross-encoder directory (default: the collection's reranker)")
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "scifact"))
    parser.add_argument("--split", default="dev")
    parser.add_argument("--queries", type=int, default=0, help="first N judged queries (0: all)")
    parser.add_argument("--top", type=int, default=50, help="chunks of the hybrid first stage per query")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per pair, at most")
    parser.add_argument("--threads", type=int, default=0, help="threads (0: the usable cores)")
    parser.add_argument("--runtimes", default="torch-float32,torch-bfloat16,openvino-float32,openvino-int8,cuda-float16")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    import django

    django.setup()
    from indexer.models import Collection
    from search import offline
    from reranker.fusion import Fusion, load_fusion
    from reranker.metrics import evaluate_run
    from reranker.scorers import usable_cores

    print(cpu_description())
    collection = Collection.objects.filter(slug=args.collection).first()
    if collection is None:
        parser.error(f"no collection {args.collection!r} (import and index it first)")
    model_dir = args.model or collection.reranker_model
    if not model_dir or not Path(model_dir).is_dir():
        parser.error(f"no model directory (give --model; the collection's reranker is {model_dir!r})")
    threads = args.threads or usable_cores()
    texts, qrels = dev_judgments(Path(args.dataset), args.split)
    qids = [q for q in qrels if q in texts and any(g > 0 for g in qrels[q].values())]
    if args.queries:
        qids = qids[: args.queries]
    qrels = {qid: qrels[qid] for qid in qids}  # the mean is over the queries run, not all judged ones
    fusion = load_fusion(model_dir).for_mode("hybrid")
    runners = scorers(model_dir, args.max_length, threads, args.runtimes.split(","))
    print(f"model {model_dir} (fusion for hybrid: {fusion.label}); {len(qids)} {args.split} "
          f"queries, top {args.top} hybrid chunks, {threads} threads; runtimes: {', '.join(runners)}")

    first_run, runs_by, ms_by = {}, {name: {} for name in runners}, {name: [] for name in runners}
    # The logits alone too: a fusion that leans on the first stage can hide how far a runtime's
    # logits moved.
    alone_by = {name: {} for name in runners}
    logits_alone = Fusion(weight=0.0)
    pairs_total = 0
    started = time.perf_counter()
    for number, qid in enumerate(qids, 1):
        hits = offline.first_stage_hits(collection, texts[qid], "hybrid", max(2 * args.top, 100))
        head = hits[: args.top]
        pairs = [(texts[qid], offline.passage_text(hit)) for hit in head]
        pairs_total += len(pairs)
        first_run[qid] = offline.document_ranking(hits)
        for name, scorer in runners.items():
            if number == 1:
                scorer.score_pairs(pairs[:2])  # the first call pays one-off set-up costs
            begun = time.perf_counter()
            logits = scorer.score_pairs(pairs)
            ms_by[name].append((time.perf_counter() - begun) * 1000)
            runs_by[name][qid] = offline.document_ranking(offline.reranked_hits(hits, logits, fusion))
            alone_by[name][qid] = offline.document_ranking(offline.reranked_hits(hits, logits, logits_alone))
        if number % 25 == 0:
            print(f"  {number}/{len(qids)} queries, {time.perf_counter() - started:.0f} s", flush=True)

    cutoffs = {"ndcg": 10}
    first = evaluate_run(first_run, qrels, cutoffs)["mean"]["ndcg@10"]
    base = "torch-float32" if "torch-float32" in runners else next(iter(runners))
    base_p50 = float(np.percentile(ms_by[base], 50))
    base_ndcg = evaluate_run(runs_by[base], qrels, cutoffs)["mean"]["ndcg@10"]
    base_alone = evaluate_run(alone_by[base], qrels, cutoffs)["mean"]["ndcg@10"]
    rows = []
    print(f"\nhybrid first stage nDCG@10: {first:.4f}  ({pairs_total / len(qids):.0f} pairs per query)")
    print(f"{'runtime':<16} {'p50 ms':>8} {'p95 ms':>8} {'speed-up':>9} {'nDCG@10':>8} {'Δ nDCG':>8} "
          f"{'logits alone':>12} {'Δ alone':>8}")
    for name in runners:
        p50, p95 = float(np.percentile(ms_by[name], 50)), float(np.percentile(ms_by[name], 95))
        ndcg = evaluate_run(runs_by[name], qrels, cutoffs)["mean"]["ndcg@10"]
        alone = evaluate_run(alone_by[name], qrels, cutoffs)["mean"]["ndcg@10"]
        rows.append({"runtime": name, "p50_ms": round(p50, 1), "p95_ms": round(p95, 1),
                     "speedup_p50": round(base_p50 / p50, 2), "ndcg@10": round(ndcg, 4),
                     "delta_ndcg": round(ndcg - base_ndcg, 4), "logits_alone_ndcg@10": round(alone, 4),
                     "delta_logits_alone": round(alone - base_alone, 4)})
        print(f"{name:<16} {p50:>8.1f} {p95:>8.1f} {base_p50 / p50:>8.2f}x {ndcg:>8.4f} {ndcg - base_ndcg:>+8.4f} "
              f"{alone:>12.4f} {alone - base_alone:>+8.4f}")
    print(f"(speed-up and Δ against {base}, p50 per query)")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_description(), "model": model_dir, "queries": len(qids),
                                               "first_stage_ndcg@10": first, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
