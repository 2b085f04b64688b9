"""Evaluate a collection's search on judged queries: first stage per mode, reranked at several
depths, a metrics table and a chart. `manage.py evaluate` and the admin's evaluate runs
(relevance/run_tasks.py) call `evaluate_collection`.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError
from django.utils import timezone
from common.progress import progress

from indexer.models import Collection
from reranker.cross_encoder import RerankerUnavailable, configured_model
from relevance.judgments import JudgmentFileError, collection_qrels, read_qrels, read_queries
from reranker.metrics import evaluate_run
from relevance.models import QUERY_MAX_LENGTH
from search import offline
from search.errors import SearchBackendError


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CommandError(f"expected comma-separated integers, not {text!r}") from None
    if not values or min(values) < 1:
        raise CommandError(f"expected positive integers, not {text!r}")
    return values


def write_pairs(path: str, pairs: list[tuple[str, str]]) -> None:
    """{"queries": [...], "passages": [...], "pairs": [[query index, passage index], ...]}, gzip."""
    import gzip

    queries = list(dict.fromkeys(q for q, _ in pairs))
    passages = list(dict.fromkeys(p for _, p in pairs))
    q_index = {q: i for i, q in enumerate(queries)}
    p_index = {p: i for i, p in enumerate(passages)}
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        json.dump({"queries": queries, "passages": passages,
                   "pairs": [[q_index[q], p_index[p]] for q, p in pairs]}, handle, ensure_ascii=False)


def read_pair_scores(path: str) -> dict[tuple[str, str], float]:
    import gzip

    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            raw = json.load(handle)
        return {(raw["queries"][q], raw["passages"][p]): float(logit)
                for (q, p), logit in zip(raw["pairs"], raw["logits"], strict=True)}
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise CommandError(f"cannot read pair scores {path}: {exc}") from None


def load_judgments(collection, queries_path, qrels_path, kinds: str = "staff"):
    """(queries, qrels, {id: length} of the queries too long to search); the collection's own
    judgments are those of `kinds` (relevance/judgments.py, JUDGMENT_KINDS)."""
    if bool(queries_path) != bool(qrels_path):
        raise CommandError("give both --queries and --qrels, or neither (the collection's judgments)")
    if not queries_path:
        queries, qrels = collection_qrels(collection, kinds)
        if not qrels:
            which = {"staff": "staff", "implicit": "implicit (click)", "both": ""}[kinds]
            raise CommandError(f"collection {collection.slug!r} has no {which + ' ' if which else ''}judgments; "
                               + ("run `manage.py click_judgments` once users have clicked" if kinds == "implicit"
                                  else "import some or give files"))
        return queries, qrels, {}
    too_long: dict[str, int] = {}
    try:
        queries, qrels = read_queries(queries_path, too_long=too_long), read_qrels(qrels_path)
    except JudgmentFileError as exc:
        raise CommandError(str(exc)) from None
    missing = sorted(set(qrels) - set(queries) - set(too_long))
    if missing:
        raise CommandError(f"{len(missing)} qrels query ids are not in {queries_path}, e.g. {missing[:5]}")
    return queries, qrels, too_long


def measure_rerank_latency(collection, scorer, queries, qids, tops, sample=20) -> dict:
    """Seconds to score one query's top N hybrid chunks from scratch, averaged over a sample."""
    latency = {}
    for top in tops:
        seconds = []
        for qid in qids[: max(1, sample)]:
            hits = offline.first_stage_hits(collection, queries[qid], "hybrid", top)
            seconds.append(scorer.timed_logits(queries[qid], [offline.passage_text(h) for h in hits]))
        latency[top] = sum(seconds) / len(seconds)
    return latency


def table(results: dict, cutoffs: dict, n: int, skipped: list[str] = ()) -> str:
    names = [f"{name}@{k}" for name, k in cutoffs.items()]
    heading = f"{n} queries"
    if skipped:
        heading += (f" ({len(skipped)} skipped: empty or longer than {QUERY_MAX_LENGTH} characters, "
                    + ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "") + ")")
    lines = [heading, f"{'mode':<10} {'run':<16} " + " ".join(f"{name:>10}" for name in names)]
    for mode, by_run in results.items():
        for run, r in by_run.items():
            lines.append(f"{mode:<10} {run:<16} " + " ".join(f"{r['mean'][name]:>10.4f}" for name in names))
    return "\n".join(lines)


def chart(results: dict, path, metric: str, slug: str, n: int) -> None:
    """Bars of `metric` per mode and run, as a PNG written to `path` (a file name or a binary file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(results)
    run_names = list(next(iter(results.values())))
    width = 0.8 / len(run_names)
    fig, ax = plt.subplots(figsize=(2.2 + 1.8 * len(modes), 4))
    for i, run in enumerate(run_names):
        values = [results[mode][run]["mean"][metric] for mode in modes]
        bars = ax.bar([m + (i - (len(run_names) - 1) / 2) * width for m in range(len(modes))], values, width,
                      label=run)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(range(len(modes)), modes)
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1)
    ax.set_title(f"{slug}: {metric} over {n} queries")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass
class Evaluation:
    """What one evaluation produced: the report written to metrics.json, the printed table,
    and the files (None when --export-pairs stopped after the first stage)."""
    report: dict
    table: str
    output: Path | None = None
    chart: Path | None = None
    lines: list[str] = field(default_factory=list)  # what is printed after the table


def new_output_dir(parent: Path, name: str) -> Path:
    """A directory of its own under `parent`: `name`, or `name-2`, `name-3`... when two
    evaluations of one collection start in the same second (they would overwrite each other)."""
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        candidate = parent / (name if n == 1 else f"{name}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{parent / name}: 999 evaluations of this second already")


def evaluate_collection(collection: Collection, options: dict, progress=progress,
                        warn=lambda line: None) -> Evaluation:
    """The body of `manage.py evaluate` (options: the command's, by their option names), also
    run by the admin's evaluate task (relevance/run_tasks.py) with its own `progress` and `warn`."""
    modes = [m.strip() for m in options["modes"].split(",") if m.strip()]
    unknown = [m for m in modes if m not in offline.MODES]
    if not modes or unknown:
        raise CommandError(f"unknown mode(s) {unknown}; choose from {', '.join(offline.REPORT_ORDER)}")
    k, recall_k = options["k"], options["recall_k"]
    if k < 1 or recall_k < 1:
        raise CommandError("--k and --recall-k must be positive")
    tops = int_list(options["rerank_top"]) if options["rerank"] else []
    queries, qrels, too_long = load_judgments(collection, options["queries"], options["qrels"],
                                             options.get("judgments", "staff"))
    qids = [q for q in qrels if any(g > 0 for g in qrels[q].values())]
    skipped = [q for q in qids if q in too_long]
    qids = [q for q in qids if q not in too_long]
    if options["limit"]:
        qids = qids[: options["limit"]]
    if skipped:
        warn(f"skipping {len(skipped)} judged queries the search refuses (empty or longer than {QUERY_MAX_LENGTH} "
             "characters): "
             + ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else ""))
    if not qids:
        raise CommandError("no judged query with a relevant document to evaluate"
                           + (f" ({len(skipped)} skipped: empty or too long)" if skipped else ""))
    qrels = {q: qrels[q] for q in qids}

    scorer, model_id = None, None
    exported: dict[tuple[str, str], None] = {}
    if tops and not options["export_pairs"]:

        model_id = options["reranker_model"] or configured_model(collection.reranker_model)
        if not model_id:
            raise CommandError("--rerank needs a reranker: set --reranker-model, the collection's reranker "
                               "or RERANKER_MODEL (train one with `manage.py train_reranker`)")
        try:
            scorer = offline.PairScorer(model_id)
        except RerankerUnavailable as exc:
            raise CommandError(str(exc)) from None
        if options["pair_scores"]:
            scorer.cache.update(read_pair_scores(options["pair_scores"]))

    cutoffs = {"ndcg": k, "recall": recall_k, "mrr": k}
    # Chunks asked from the first stage: enough for recall@k over documents (a document may
    # have several chunks in the list) and for the largest rerank head.
    depth = options["depth"] or max([2 * recall_k, *tops])
    results: dict[str, dict] = {}

    for mode in modes:
        first, reranked = {}, {top: {} for top in tops}
        # A model with a fusion (reranker/fusion.py) is also shown by its logits alone.
        fusion = scorer.model.fusion.for_mode(mode) if scorer is not None else None
        fused = fusion is not None and fusion.weight > 0
        alone = {top: {} for top in tops}
        search_seconds = []
        for qid in progress(qids, desc=mode, unit="query"):
            started = time.perf_counter()
            try:
                hits = offline.first_stage_hits(collection, queries[qid], mode, depth)
            except SearchBackendError as exc:
                raise CommandError(f"search failed for query {qid!r}: {exc}") from None
            search_seconds.append(time.perf_counter() - started)
            first[qid] = offline.document_ranking(hits)
            if tops and options["export_pairs"]:
                exported.update(dict.fromkeys((queries[qid], offline.passage_text(h)) for h in hits[: max(tops)]))
            elif tops:
                logits = scorer.logits(queries[qid], [offline.passage_text(h) for h in hits[: max(tops)]])
                for top in tops:
                    reranked[top][qid] = offline.document_ranking(
                        offline.reranked_hits(hits, logits[:top], fusion))
                    if fused:
                        alone[top][qid] = offline.document_ranking(offline.reranked_hits(hits, logits[:top]))
        results[mode] = {"first stage": evaluate_run(first, qrels, cutoffs)}
        for top in (tops if scorer else []):
            if fused:
                results[mode][f"logits top-{top}"] = evaluate_run(alone[top], qrels, cutoffs)
            results[mode][f"rerank top-{top}"] = evaluate_run(reranked[top], qrels, cutoffs)
        results[mode]["first stage"]["seconds_per_query"] = sum(search_seconds) / len(search_seconds)

    means = {mode: {run: {key: value for key, value in r.items() if key != "per_query"}
                    for run, r in by_run.items()} for mode, by_run in results.items()}
    if options["export_pairs"]:
        write_pairs(options["export_pairs"], list(exported))
        return Evaluation(report={"collection": collection.slug, "queries": len(qids), "cutoffs": cutoffs,
                                  "results": means},
                          table=table(results, cutoffs, len(qids), skipped),
                          lines=[f"{len(exported)} (query, passage) pairs written to {options['export_pairs']}"])
    rerank_latency = measure_rerank_latency(collection, scorer, queries, qids, tops,
                                            options["latency_sample"]) if scorer else {}
    if scorer is not None:
        report_device = str(scorer.model.device)
    else:
        report_device = None
    if options["output"]:
        output = Path(options["output"])
        output.mkdir(parents=True, exist_ok=True)
    else:
        output = new_output_dir(settings.BASE_DIR / "var" / "evaluations",
                                f"{collection.slug}-{timezone.now():%Y%m%d-%H%M%S}")
    report = {
        "collection": collection.slug, "queries_file": options["queries"], "qrels_file": options["qrels"],
        "queries": len(qids),
        "skipped_queries": {"longer_than": QUERY_MAX_LENGTH, "count": len(skipped), "ids": skipped},
        "cutoffs": cutoffs, "reranker_model": model_id, "reranker_device": report_device,
        "reranker_precision": scorer.model.precision if scorer else None,
        "reranker_runtime": scorer.model.runtime if scorer else None,
        "fusion": scorer.model.fusion.to_dict() if scorer else None,
        "pair_scores_file": options["pair_scores"],
        "pairs_scored_here": scorer.scored_here if scorer else 0,
        "pairs_from_file": (len(scorer.cache) - scorer.scored_here) if scorer else 0,
        "rerank_seconds_per_query": rerank_latency,
        "results": means,
        "per_query": {mode: {run: r["per_query"] for run, r in by_run.items()} for mode, by_run in results.items()},
    }
    (output / "metrics.json").write_text(json.dumps(report, indent=2))
    lines = []
    if scorer is not None:
        fusions = {mode: scorer.model.fusion.for_mode(mode) for mode in results}
        lines.append(f"reranker {model_id} on {report_device}, {scorer.model.runtime} {scorer.model.precision}; "
                     "rerank = its logits fused with the first stage as its fusion.json says (" + ", ".join(
                         f"{mode}: {f.label}" for mode, f in fusions.items())
                     + "); 'logits' = its logits alone")
    if rerank_latency:
        lines.append("rerank latency per query (in-process, this machine): " + ", ".join(
            f"top-{top} {seconds * 1000:.0f} ms" for top, seconds in rerank_latency.items()))
    chart(results, output / "ndcg.png", f"ndcg@{k}", collection.slug, len(qids))
    lines.append(f"written: {output / 'metrics.json'}, {output / 'ndcg.png'}")
    return Evaluation(report=report, table=table(results, cutoffs, len(qids), skipped), output=output,
                      chart=output / "ndcg.png", lines=lines)
