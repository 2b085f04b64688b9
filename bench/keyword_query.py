"""The keyword stage's query form (not a test): nDCG@10 of candidate BM25 queries on both engines,
against a plain BM25 over title + text computed outside the project (bench/bm25_reference.py).

    .venv/bin/python bench/keyword_query.py [--datasets scifact nfcorpus] [--splits train]
        [--engines elasticsearch opensearch] [--queries best_fields cross_fields ...]
        [--bm25 0.9,0.4 1.2,0.75 ...] [--project]

Per data set the corpus is chunked exactly as the pipeline chunks it (indexer.pipeline.plan_chunks,
default chunk settings) and each chunk's source is what the pipeline writes (chunk_source: title,
text, `title_terms`/`text_terms` analysed by indexer/analysis.py), without vectors: only BM25 is
measured. Per engine two throwaway indices (`bench-kq-<run>-...`, deleted at the end):

  project    the project's own mapping and settings (Store.create_index of indexer/store.py),
             searched with the project's own keyword clause (search.retrieval.text_query) in the
             project's body (keyword_body: the collection filter, SEARCH_DEPTH... here --depth
             chunks, the tie break). With --project only. Says what the code as it stands gives.
  variant    the same mapping except that the terms fields carry no per-field similarity (the
             index's `default` similarity is BM25 with --bm25's k1, b instead: Elasticsearch
             refuses `combined_fields` over fields with a per-field similarity) and both copy
             into an `all_terms` field (title + text of the chunk in one field, the layout of the
             reference); searched with each candidate of --queries in the same body. Each
             (k1, b) of --bm25 is set by closing the index, changing `index.similarity.default`
             and opening it again (BM25 keeps document lengths, not scores, in the index).

Documents are ranked by their best chunk, as the search page groups them (and `manage.py
evaluate`); metrics are the project's (reranker/metrics.py). Queries are sent 100 to an msearch.
The reference row is bench/bm25_reference.py's BM25 (k1 0.9, b 0.4) on the same split.
Results: docs/keyword-search.md, "The keyword query".
"""
from __future__ import annotations

import argparse
import os
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

from bm25_reference import bm25_run, dataset_language, dataset_path, evaluate_run, load_split, read_corpus  # noqa: E402

SLUG = "bench-kq"
TERMS = ["title_terms", "text_terms"]


def _multi_match(kind: str, fields: list[str] = TERMS, **extra):
    return lambda terms: {"multi_match": {"query": terms, "fields": fields, "type": kind, **extra}}


# Candidate clauses over the analysed terms (a space-separated string of query terms).
QUERIES = {
    "best_fields": _multi_match("best_fields", tie_breaker=0.3),  # the keyword stage before
    "best_fields-tie0.5": _multi_match("best_fields", tie_breaker=0.5),
    "most_fields": _multi_match("most_fields"),
    "cross_fields": _multi_match("cross_fields"),
    "cross_fields-tie1": _multi_match("cross_fields", tie_breaker=1.0),
    "cross_fields-title2": _multi_match("cross_fields", ["title_terms^2", "text_terms"]),
    "combined_fields": lambda terms: {"combined_fields": {"query": terms, "fields": TERMS}},
    "combined_fields-title2": lambda terms: {"combined_fields": {"query": terms,
                                                                 "fields": ["title_terms^2", "text_terms"]}},
    "combined_fields-title3": lambda terms: {"combined_fields": {"query": terms,
                                                                 "fields": ["title_terms^3", "text_terms"]}},
    "one_field": lambda terms: {"match": {"all_terms": terms}},
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"],
                        help="BEIR folders, or names under shared/datasets")
    parser.add_argument("--splits", nargs="+", default=["train"], help="qrels/<split>.tsv")
    parser.add_argument("--engines", nargs="+", default=["elasticsearch", "opensearch"],
                        choices=["elasticsearch", "opensearch"])
    parser.add_argument("--queries", nargs="*", default=list(QUERIES), choices=list(QUERIES),
                        help="candidates on the variant index (none: only --project)")
    parser.add_argument("--bm25", nargs="+", default=["0.9,0.4"], metavar="K1,B",
                        help="BM25 parameters of the variant index, each measured in turn")
    parser.add_argument("--project", action="store_true",
                        help="also the project's own mapping and keyword clause, as the code stands")
    parser.add_argument("--depth", type=int, default=200, help="chunks per query (evaluate's default)")
    args = parser.parse_args()
    args.bm25 = [tuple(float(x) for x in pair.split(",")) for pair in args.bm25]
    return args


def chunk_writes(path: Path, language: str):
    """The pipeline's chunks of a BEIR corpus (sources without `embedding`) and their count."""
    import numpy as np

    from indexer.models import Collection, Document, default_embedding_model
    from indexer.pipeline import chunk_source, plan_chunks
    from indexer.store import ChunkWrite

    # Chunked with the tokenizer of the model a new collection of the language gets (what save()
    # would fill in), at its default chunk size.
    collection = Collection(name=SLUG, slug=SLUG, language=language,
                            embedding_model=default_embedding_model(language))
    docs = [Document(pk=i, collection=collection, external_id=str(row["_id"]), title=row.get("title") or "",
                     text=row["text"], metadata={}, content_hash="")
            for i, row in enumerate(read_corpus(path), start=1)]
    planned = plan_chunks(docs, collection, collection.embedding_model)
    titles: dict[int, str] = {}
    writes = []
    for item in planned:
        source = chunk_source(item, np.zeros(1), language, titles)
        del source["embedding"]
        writes.append(ChunkWrite(f"{SLUG}/{item.document.external_id}/{item.chunk.number}", source))
    return writes, len(docs)


def variant_layout(store, language: str, k1: float, b: float) -> tuple[dict, dict]:
    """Mapping and settings of the variant index: the project's, with the terms fields on the
    index's default similarity and copied into `all_terms`."""
    from indexer.store import TERMS_FIELDS, chunk_mapping, index_settings, opensearch_chunk_mapping

    dims, options = 384, store.default_index_options
    if store.engine == "OpenSearch":
        mapping = opensearch_chunk_mapping(dims, options, language)
    else:
        mapping = chunk_mapping(dims, options, language)
    properties = mapping["properties"]
    for name in TERMS_FIELDS:
        properties[name].pop("similarity", None)
        properties[name]["copy_to"] = "all_terms"
    properties["all_terms"] = {key: value for key, value in properties[TERMS_FIELDS[0]].items() if key != "copy_to"}
    mapping["_source"] = {"excludes": [*TERMS_FIELDS, "all_terms"]}
    settings = index_settings()
    settings["similarity"]["default"] = {"type": "BM25", "k1": k1, "b": b}
    if store.engine == "OpenSearch":
        settings.update({"index.knn": True, "index.knn.derived_source.enabled": False})
    return mapping, settings


def create_variant(store, index: str, language: str, k1: float, b: float) -> None:
    mapping, settings = variant_layout(store, language, k1, b)
    if store.engine == "OpenSearch":
        store.client.indices.create(index=index, body={"settings": settings, "mappings": mapping})
    else:
        store.client.indices.create(index=index, mappings=mapping, settings=settings)


def set_bm25(store, index: str, k1: float, b: float) -> None:
    """The variant index's default similarity, changed in place (closed meanwhile)."""
    similarity = {"index": {"similarity": {"default": {"type": "BM25", "k1": k1, "b": b}}}}
    client = store.client
    client.indices.close(index=index)
    if store.engine == "OpenSearch":
        client.indices.put_settings(index=index, body=similarity)
        client.indices.open(index=index)
        client.cluster.health(index=index, wait_for_status="yellow", timeout="60s")
    else:
        client.indices.put_settings(index=index, settings=similarity)
        client.indices.open(index=index)
        client.cluster.health(index=index, wait_for_status="yellow", timeout="60s")


def ranking(store, index: str, bodies: list[dict | None]) -> list[list[str]]:
    """External ids of the documents each body finds, best chunk first (100 bodies an msearch)."""
    out: list[list[str]] = [[] for _ in bodies]
    sent = [(i, body) for i, body in enumerate(bodies) if body is not None]
    for start in range(0, len(sent), 100):
        batch = sent[start:start + 100]
        for (i, _), response in zip(batch, store.msearch([([index], body) for _, body in batch])):
            hits = response["hits"]["hits"]
            out[i] = list(dict.fromkeys(h["_source"]["external_id"] for h in hits))
    return out


def main() -> None:
    args = parse_args()
    import django

    django.setup()
    from indexer.analysis import query_terms
    from indexer.models import default_embedding_model
    from indexer.store import STORES
    from search.retrieval import es_filters, keyword_body, text_query

    filters = es_filters([SLUG], {})
    rows = []  # (dataset, engine, index, query, bm25, {split: (ndcg, recall)})
    created: list[tuple[object, str]] = []
    stores = {engine: STORES[engine]() for engine in args.engines}
    try:
        for name in args.datasets:
            path = dataset_path(name)
            language = dataset_language(path)
            splits = {split: load_split(path, split) for split in args.splits}
            started = time.perf_counter()
            writes, n_docs = chunk_writes(path, language)
            print(f"{path.name}: {n_docs} documents, {len(writes)} chunks ({language}, chunked for "
                  f"{default_embedding_model(language)}, "
                  f"{time.perf_counter() - started:.0f} s)", flush=True)

            def scored(runs_by_split) -> dict:
                result = {}
                for split, (_, qrels, _) in splits.items():
                    mean = evaluate_run(runs_by_split[split], qrels, {"ndcg": 10, "recall": 100})["mean"]
                    result[split] = (mean["ndcg@10"], mean["recall@100"])
                return result

            reference = scored({split: bm25_run(read_corpus(path), queries, list(qrels), language, 0.9, 0.4)
                                for split, (queries, qrels, _) in splits.items()})
            rows.append((path.name, "bm25s", "whole documents", "reference: title + text", "0.9, 0.4", reference))
            print("  ".join(map(str, rows[-1][:5])), _cells(reference, args.splits), flush=True)

            for engine, store in stores.items():
                indices = {}
                if args.project:
                    indices["project"] = f"bench-kq-{RUN}-{path.name}-{engine}-project"
                    store.create_index(indices["project"], dims=384, model_id="bench",
                                       index_options=store.default_index_options, language=language)
                if args.queries:
                    indices["variant"] = f"bench-kq-{RUN}-{path.name}-{engine}-variant"
                    create_variant(store, indices["variant"], language, *args.bm25[0])
                for kind, index in indices.items():
                    created.append((store, index))
                    started = time.perf_counter()
                    store.pause_refresh(index)
                    for start in range(0, len(writes), 1000):
                        store.write_chunks(index, writes[start:start + 1000])
                    store.resume_refresh(index)
                    store.refresh(index)
                    print(f"  {engine} {kind}: written in {time.perf_counter() - started:.0f} s", flush=True)

                def measure(index: str, clause) -> dict:
                    runs = {}
                    for split, (queries, qrels, _) in splits.items():
                        qids = list(qrels)
                        bodies = []
                        for qid in qids:
                            match = clause(queries[qid])
                            bodies.append(keyword_body(queries[qid], filters, args.depth, match) if match else None)
                        runs[split] = dict(zip(qids, ranking(store, index, bodies)))
                    return scored(runs)

                if args.project:
                    result = measure(indices["project"], lambda query: text_query(query, language))
                    rows.append((path.name, engine, "project", "project (search.retrieval.text_query)",
                                 "project", result))
                    print("  ".join(map(str, rows[-1][:5])), _cells(result, args.splits), flush=True)
                if not args.queries:
                    continue
                for number, (k1, b) in enumerate(args.bm25):
                    if number:
                        set_bm25(store, indices["variant"], k1, b)
                    for query in args.queries:
                        def clause(text, form=QUERIES[query]):
                            terms = query_terms(text, language)
                            return form(" ".join(terms)) if terms else None
                        try:
                            result = measure(indices["variant"], clause)
                        except Exception as exc:  # a form this engine lacks: say so, go on
                            print(f"  {engine} {query}: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
                            continue
                        rows.append((path.name, engine, "variant", query, f"{k1:g}, {b:g}", result))
                        print("  ".join(map(str, rows[-1][:5])), _cells(result, args.splits), flush=True)
    finally:
        for store, index in created:
            store.delete_index(index)

    print()
    header = ["data set", "engine", "index", "query", "BM25 k1, b"] + [
        f"{split} {metric}" for split in args.splits for metric in ("nDCG@10", "R@100")]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for dataset, engine, index, query, bm25, result in rows:
        cells = [f"{value:.4f}" for split in args.splits for value in result[split]]
        print("| " + " | ".join([dataset, engine, index, query, bm25, *cells]) + " |")


def _cells(result: dict, splits: list[str]) -> str:
    return "  ".join(f"{split} {result[split][0]:.4f} / {result[split][1]:.4f}" for split in splits)


if __name__ == "__main__":
    main()
