"""Keyword-stage analysis benchmark (not a test): BM25 nDCG@10 of analysis variants on a BEIR set.

    .venv/bin/python bench/keyword_analysis.py [--corpus DIR] [--qrels train.tsv dev.tsv] [--variants ...]
        [--queries best-0.3 most ...] [--similarities default k09_b04 ...]

(about 20 s of Elasticsearch time per variant, query form and BM25 setting on SciFact's 809
queries; docs/keyword-search.md has the results.)

The corpus is chunked exactly as the pipeline chunks it (indexer.pipeline.plan_chunks, the
default chunk settings, no encoding), written without vectors into one scratch index per
variant under its own prefix (deleted at the end), and searched with the keyword query of the
search page over `title`/`text` (variant `standard`: Elasticsearch's standard analyzer, the
behaviour of language `none`) or `title_terms`/`text_terms` (terms written by the variant's
Python analysis, as indexer/analysis.py does for `en`). Documents are ranked by their best
chunk, as the search page groups them. Only the keyword stage is measured: semantic and hybrid
need vectors and come from `manage.py evaluate` (docs/keyword-search.md).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RUN = secrets.token_hex(3)
os.environ["ELASTICSEARCH_INDEX_PREFIX"] = f"bench-kw-{RUN}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The longer English stop list of the Snowball project (snowballstem.org), for comparison with
# Lucene's 33 words that indexer/analysis.py uses.
SNOWBALL_STOP = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers herself
it its itself they them their theirs themselves what which who whom this that these those am is are was were be
been being have has had having do does did doing would should could ought i'm you're he's she's it's we're
they're i've you've we've they've i'd you'd he'd she'd we'd they'd i'll you'll he'll she'll we'll they'll isn't
aren't wasn't weren't hasn't haven't hadn't doesn't don't didn't won't wouldn't shan't shouldn't can't cannot
couldn't mustn't let's that's who's what's here's there's when's where's why's how's a an the and but if or
because as until while of at by for with about against between into through during before after above below to
from up down in out on off over under again further then once here there when where why how all any both each
few more most other some such no nor not only own same so than too very
""".split())


# multi_match forms: (fields, type, tie_breaker); "title"/"text"/"all" become the terms fields.
QUERIES = {
    "best-0.3": (["title", "text"], "best_fields", 0.3),
    "best-0.5": (["title", "text"], "best_fields", 0.5),
    "most": (["title", "text"], "most_fields", None),
    "title^0.5-best-0.3": (["title^0.5", "text"], "best_fields", 0.3),
    "combined": (["all"], "best_fields", None),
}
# BM25 (k1, b) as subfields of the terms fields; Elasticsearch's default is (1.2, 0.75).
SIMILARITIES = {"k09_b04": (0.9, 0.4), "k12_b05": (1.2, 0.5), "k15_b075": (1.5, 0.75)}


def variants() -> dict:
    """name -> (stop words or None for the `standard` fields, stemmer algorithm or None)."""
    from indexer.analysis import ENGLISH_STOP_WORDS

    return {
        "standard": (None, None),
        "lucene-stop": (ENGLISH_STOP_WORDS, None),
        "english": (ENGLISH_STOP_WORDS, "english"),
        "english-nostop": (frozenset(), "english"),
        "english-snowball-stop": (SNOWBALL_STOP, "english"),
        "porter": (ENGLISH_STOP_WORDS, "porter"),
    }


def make_analyzer(stop, algorithm):
    import Stemmer

    from indexer.analysis import _TOKEN

    stemmer = Stemmer.Stemmer(algorithm) if algorithm else None

    def analyze(text: str) -> list[str]:
        words = []
        for match in _TOKEN.finditer(text):
            word = match.group().lower().replace("’", "'")
            word = word[:-2] if word.endswith("'s") else word
            if word and word not in stop:
                words.append(word)
        return stemmer.stemWords(words) if stemmer else words

    return analyze


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "datasets" / "scifact")
    parser.add_argument("--qrels", nargs="+", default=["train.tsv", "dev.tsv"], help="files under DIR/qrels")
    parser.add_argument("--variants", nargs="+", help="default: all")
    parser.add_argument("--depth", type=int, default=200, help="chunks per query (evaluate's default)")
    parser.add_argument("--queries", nargs="+", default=["best-0.3"], choices=sorted(QUERIES),
                        help="query forms to compare (the search uses best-0.3)")
    parser.add_argument("--similarities", nargs="+", default=["default"], choices=["default", *SIMILARITIES],
                        help="BM25 parameters of the terms fields (default: k1 1.2, b 0.75)")
    args = parser.parse_args()

    import django

    django.setup()
    from elasticsearch import helpers

    from indexer.store import get_client
    from indexer.models import Collection, Document
    from indexer.pipeline import plan_chunks
    from relevance.judgments import read_qrels, read_queries
    from reranker.metrics import evaluate_run

    client = get_client()
    collection = Collection(slug="bench", name="bench")
    docs = []
    with (args.corpus / "corpus.jsonl").open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            row = json.loads(line)
            docs.append(Document(pk=number, collection=collection, external_id=str(row["_id"]),
                                 title=row.get("title") or "", text=row["text"]))
    started = time.perf_counter()
    planned = plan_chunks(docs, collection, collection.embedding_model)
    print(f"{len(docs)} documents, {len(planned)} chunks (planned in {time.perf_counter() - started:.1f}s)")
    queries = read_queries(args.corpus / "queries.jsonl")
    splits = {name: read_qrels(args.corpus / "qrels" / name) for name in args.qrels}
    chosen = {k: v for k, v in variants().items() if not args.variants or k in args.variants}
    prefix = os.environ["ELASTICSEARCH_INDEX_PREFIX"]
    rows = []
    try:
        for name, (stop, algorithm) in chosen.items():
            index = f"{prefix}-{name}"
            analyze = make_analyzer(stop, algorithm) if stop is not None else None
            terms_field = {"type": "text", "analyzer": "whitespace", "index_options": "freqs",
                           "fields": {sim: {"type": "text", "analyzer": "whitespace", "index_options": "freqs",
                                            "similarity": sim} for sim in SIMILARITIES}}
            client.indices.create(index=index, mappings={"properties": {
                "external_id": {"type": "keyword"},
                "title": {"type": "text", "analyzer": "standard"},
                "text": {"type": "text", "analyzer": "standard"},
                "title_terms": terms_field, "text_terms": terms_field, "all_terms": terms_field,
            }}, settings={"number_of_shards": 1, "number_of_replicas": 0, "index": {"similarity": {
                sim: {"type": "BM25", "k1": k1, "b": b} for sim, (k1, b) in SIMILARITIES.items()}}})
            started = time.perf_counter()
            actions = []
            titles: dict[int, str] = {}
            for item in planned:
                source = {"external_id": item.document.external_id, "title": item.document.title,
                          "text": item.chunk.text}
                if analyze:
                    if item.document.pk not in titles:
                        titles[item.document.pk] = " ".join(analyze(item.document.title))
                    source["title_terms"] = titles[item.document.pk]
                    source["text_terms"] = " ".join(analyze(item.chunk.text))
                    source["all_terms"] = source["title_terms"] + " " + source["text_terms"]
                actions.append({"_index": index, "_source": source})
            analysis_seconds = time.perf_counter() - started
            helpers.bulk(client, actions, chunk_size=1000)
            client.indices.refresh(index=index)
            for config in args.queries:
                fields, query_type, tie = QUERIES[config]
                if analyze:
                    fields = [f.replace("title", "title_terms").replace("text", "text_terms")
                              .replace("all", "all_terms") for f in fields]
                elif "all" in fields[0]:
                    continue
                for sim in args.similarities:
                    if sim != "default" and not analyze:
                        continue
                    sim_fields = [f.replace("_terms", f"_terms.{sim}") if sim != "default" else f for f in fields]
                    result = [name, config, sim, f"{analysis_seconds:.1f}"]
                    for split, qrels in splits.items():
                        run = {}
                        for qid in qrels:
                            text = " ".join(analyze(queries[qid])) if analyze else queries[qid]
                            match = {"multi_match": {"query": text, "fields": sim_fields, "type": query_type}}
                            if tie is not None:
                                match["multi_match"]["tie_breaker"] = tie
                            hits = client.search(index=index, query=match, size=args.depth,
                                                 source=["external_id"])["hits"]["hits"] if text.strip() else []
                            run[qid] = list(dict.fromkeys(h["_source"]["external_id"] for h in hits))
                        mean = evaluate_run(run, qrels, {"ndcg": 10, "recall": 100})["mean"]
                        result += [f"{mean['ndcg@10']:.4f}", f"{mean['recall@100']:.4f}"]
                    rows.append(result)
                    print("  ".join(result), flush=True)
    finally:
        client.options(ignore_status=404).indices.delete(index=f"{prefix}-*", expand_wildcards="all")
    header = ["variant", "query", "BM25", "analysis s"] + [f"{s} {m}" for s in splits for m in ("nDCG@10", "R@100")]
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print()
    for row in [header] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))


if __name__ == "__main__":
    main()
