"""A plain BM25 outside the project (not a test): the yardstick for the project's keyword stage.

    .venv/bin/python bench/bm25_reference.py [--dataset DIR] [--split dev] [--language en|zh]
        [--k1 0.9] [--b 0.4]

Each document is one bag of terms: its title and text concatenated, whole (no chunks), analysed
by the project's own `indexer.analysis.analyze` (Snowball English stems and Lucene's stop words
for `en`, jieba search-mode words for `zh`); a query is `indexer.analysis.query_terms`, as the
search analyses it. Scored by bm25s's `lucene` variant (Lucene's BM25: idf log(1 + (N - df + 0.5)
/ (df + 0.5)), exact document lengths), documents without any query term left out, nDCG@10 and
recall@100 by the project's own metrics (reranker/metrics.py evaluate_run). Nothing of
Elasticsearch, OpenSearch, Django or the index is involved, so the figure says what BM25 over the same
terms can do; bench/keyword_query.py measures the project's query against it
(docs/keyword-search.md, "The keyword query").

The language defaults to `zh` for a data set whose folder ends in `-zh`, else `en`. Needs bm25s
(requirements.txt, a bench-only dependency). Under a minute for any of the three data sets.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATASETS = ROOT.parent / "shared" / "datasets"


def evaluate_run(run, qrels, cutoffs) -> dict:
    """The project's metrics (reranker/metrics.py: trec_eval's definitions, Django-free)."""
    from reranker.metrics import evaluate_run

    return evaluate_run(run, qrels, cutoffs)


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """{query id: {document id: grade}} from a BEIR qrels TSV (header line, query-id, corpus-id,
    score), as relevance/judgments.py reads one, without needing Django."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            row = [cell.strip() for cell in line.rstrip("\n").split("\t")]
            if not any(row) or (number == 0 and row[0].lower() in {"query-id", "query_id", "qid"}):
                continue
            qid, doc_id, grade = row[0], row[-2], row[-1]  # BEIR's 3 columns or TREC's 4
            qrels.setdefault(qid, {})[doc_id] = int(grade)
    return qrels


def read_queries(path: Path) -> tuple[dict[str, str], list[str]]:
    """{query id: text} normalised as the search normalises a query, and the ids left out: empty
    (CMRC 2018 has one, which the project's strict reader refuses) or longer than the search
    accepts (left out as `manage.py evaluate` leaves them out)."""
    from search.query_text import QUERY_MAX_LENGTH, normalize_query

    queries, left_out = {}, []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                text = normalize_query(str(record["text"]))
                if text and len(text) <= QUERY_MAX_LENGTH:
                    queries[str(record["_id"])] = text
                else:
                    left_out.append(str(record["_id"]))
    return queries, left_out


def load_split(path: Path, split: str) -> tuple[dict[str, str], dict[str, dict[str, int]], list[str]]:
    """Queries, the split's judgments of the queries kept, and the judged ids left out."""
    queries, left_out = read_queries(path / "queries.jsonl")
    qrels = read_qrels(path / "qrels" / f"{split}.tsv")
    return queries, {q: j for q, j in qrels.items() if q in queries}, [q for q in qrels if q not in queries]


def dataset_path(name: str | Path) -> Path:
    path = Path(name)
    return path if path.exists() else DATASETS / str(name)


def dataset_language(path: Path) -> str:
    return "zh" if path.name.endswith("-zh") else "en"


def read_corpus(path: Path) -> list[dict]:
    with (path / "corpus.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def bm25_run(docs: list[dict], queries: dict[str, str], qids: list[str], language: str,
             k1: float, b: float, depth: int = 100) -> dict[str, list[str]]:
    """{query id: [document id, ...]}: plain BM25 over title + text, best first."""
    import bm25s
    import numpy as np

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it sets DEBUG on import

    from indexer.analysis import analyze, query_terms

    corpus = [analyze(f"{d.get('title') or ''}\n{d['text']}", language) for d in docs]
    ids = [str(d["_id"]) for d in docs]
    retriever = bm25s.BM25(method="lucene", k1=k1, b=b)
    retriever.index(corpus, show_progress=False)
    run = {}
    for qid in qids:
        terms = retriever.get_tokens_ids(query_terms(queries[qid], language))
        if not terms:
            run[qid] = []
            continue
        scores = retriever.get_scores_from_ids(terms)
        top = np.argsort(-scores, kind="stable")[:depth]
        run[qid] = [ids[i] for i in top if scores[i] > 0]
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=DATASETS / "nfcorpus",
                        help="a BEIR folder, or the name of one under shared/datasets")
    parser.add_argument("--split", default="dev", help="qrels/<split>.tsv")
    parser.add_argument("--language", choices=["en", "zh"], help="default: zh for a folder ending in -zh, else en")
    parser.add_argument("--k1", type=float, default=0.9)
    parser.add_argument("--b", type=float, default=0.4)
    args = parser.parse_args()
    path = dataset_path(args.dataset)
    language = args.language or dataset_language(path)

    queries, qrels, left_out = load_split(path, args.split)
    started = time.perf_counter()
    run = bm25_run(read_corpus(path), queries, list(qrels), language, args.k1, args.b)
    result = evaluate_run(run, qrels, {"ndcg": 10, "recall": 100})
    mean = result["mean"]
    print(f"{path.name} {args.split} ({result['queries']} queries, {language}, k1 {args.k1}, b {args.b}, "
          f"{len(left_out)} judged queries empty or too long, left out): nDCG@10 {mean['ndcg@10']:.4f}  "
          f"R@100 {mean['recall@100']:.4f}  ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
