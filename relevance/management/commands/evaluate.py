"""Relevance of a collection's search, per first-stage mode, without and with the reranker.

    python manage.py evaluate scifact --queries ../shared/datasets/scifact/queries.jsonl \
        --qrels ../shared/datasets/scifact/qrels/dev.tsv --modes keyword,semantic,hybrid --rerank

Each query goes through the project's first stage (search/offline.py → search/retrieval.py);
with --rerank, the top N of each mode are rescored by the collection's cross-encoder (the
model the rerank worker would load) for each N of --rerank-top. Prints a table, writes
metrics.json and ndcg.png into --output.

Judged queries longer than QUERY_MAX_LENGTH (the search refuses them) are skipped, counted and
named in the table and in metrics.json (`skipped_queries`).
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from indexer.models import Collection
from relevance.evaluation import evaluate_collection
from relevance.judgments import JUDGMENT_KINDS
from search import offline


class Command(BaseCommand):
    help = "nDCG@k, Recall@100 and MRR@k of each search mode, without and with the reranker."

    def add_arguments(self, parser):
        parser.add_argument("collection", help="collection slug")
        parser.add_argument("--queries", help="BEIR queries.jsonl (default: the collection's judgments)")
        parser.add_argument("--qrels", help="qrels TSV (default: the collection's judgments)")
        parser.add_argument("--judgments", choices=JUDGMENT_KINDS, default="staff",
                            help="the collection's judgments to read: staff (imported, search page, admin), implicit "
                                 "(from clicks) or both, staff winning a pair judged both ways (default staff)")
        parser.add_argument("--modes", default=",".join(offline.REPORT_ORDER), help="comma-separated first-stage modes")
        parser.add_argument("--rerank", action="store_true", help="also rerank each mode's top candidates")
        parser.add_argument("--rerank-top", default="50,100", help="candidates reranked, one or more N (default 50,100)")
        parser.add_argument("--reranker-model", help="cross-encoder id or directory (default: the collection's, "
                                                     "else RERANKER_MODEL)")
        parser.add_argument("--k", type=int, default=10, help="cutoff of nDCG and MRR (default 10)")
        parser.add_argument("--recall-k", type=int, default=100, help="cutoff of recall (default 100)")
        parser.add_argument("--depth", type=int, help="chunks asked from the first stage (default max(2 × recall-k, "
                                                        "largest rerank top))")
        parser.add_argument("--latency-sample", type=int, default=20,
                            help="queries whose rerank is timed from scratch (default 20)")
        parser.add_argument("--limit", type=int, help="evaluate only the first N judged queries")
        parser.add_argument("--export-pairs", metavar="FILE",
                            help="run the first stage only and write the (query, passage) pairs that --rerank would "
                                 "score to FILE (.json.gz), e.g. to score them on a GPU machine")
        parser.add_argument("--pair-scores", metavar="FILE",
                            help="logits of those pairs computed elsewhere by the same reranker model (a file "
                                 "with 'logits' added); pairs missing from it are scored here")
        parser.add_argument("--output", help="folder for metrics.json and ndcg.png "
                                             "(default var/evaluations/<collection>-<time>)")

    def handle(self, *args, **options):
        collection = Collection.objects.filter(slug=options["collection"]).first()
        if collection is None:
            raise CommandError(f"no collection with slug {options['collection']!r}")
        evaluation = evaluate_collection(collection, options, warn=self.stderr.write)
        self.stdout.write(evaluation.table)
        for line in evaluation.lines:
            self.stdout.write(line)
