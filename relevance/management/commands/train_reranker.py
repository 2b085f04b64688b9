"""Train a cross-encoder reranker on a collection's judgments (see reranker/training.py).

    python manage.py train_reranker scifact --pseudo-queries 5000 --epochs 2

1. Mining, through the project's own search (search/offline.py): each judged query's first-stage
   candidates (hard negatives; judged-relevant documents are never negatives), and optionally
   pseudo-queries made from documents (their titles, leading sentences or key terms:
   relevance/pseudo_queries.py), with their own candidates.
2. Training (CUDA when present), a seeded share of the judged queries held out.
3. A versioned model directory with a model card; installed as the collection's reranker only
   when its held-out nDCG@10 beats the first stage's, otherwise the command fails and says so.

`--save-data F` stops after mining and writes the data (e.g. for a GPU machine, where
`python -m reranker.training F OUT` trains without the database or Elasticsearch);
`--data F` trains from such a file instead of mining.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from indexer.models import Collection
from relevance.collection_training import check_options, install_trained, train_collection
from relevance.judgments import JUDGMENT_KINDS
from relevance.pseudo_queries import KINDS
from common.precision import PRECISIONS
from reranker.training import POOLINGS, TrainingSettings
from search import offline


def pseudo_kinds(value: str) -> tuple[str, ...]:
    kinds = tuple(kind.strip() for kind in value.split(",") if kind.strip())
    if not kinds or any(kind not in KINDS for kind in kinds):
        raise argparse.ArgumentTypeError(f"choose among {', '.join(KINDS)}, comma-separated, not {value!r}")
    return kinds


class Command(BaseCommand):
    help = "Fine-tune a cross-encoder reranker on a collection's judgments, with hard negatives from its search."

    def add_arguments(self, parser):
        d = TrainingSettings()
        parser.add_argument("collection", help="collection slug")
        parser.add_argument("--base", default=d.base, help="base model: a transformer (gets --pooling and a "
                            "new head) or a CrossEncoder directory (default: the packaged all-MiniLM-L6-v2)")
        parser.add_argument("--epochs", type=int, default=d.epochs)
        parser.add_argument("--max-length", type=int, default=d.max_length, help="tokens per (query, passage) pair")
        parser.add_argument("--negatives", type=int, default=d.negatives, help="hard negatives per positive")
        parser.add_argument("--negatives-from-top", type=int, default=d.negatives_from_top,
                            help="negatives are drawn from this many first-stage documents")
        parser.add_argument("--pseudo-queries", type=int, default=0,
                            help="documents whose title becomes a pseudo-query for their text (e.g. 5000; "
                                 "costs one search each, and training time)")
        parser.add_argument("--judgments", choices=JUDGMENT_KINDS, default="staff",
                            help="judgments to train and decide on: staff (imported, search page, admin), implicit "
                                 "(from clicks) or both, staff winning a pair judged both ways (default staff)")
        parser.add_argument("--pseudo-kinds", type=pseudo_kinds, default=None, metavar="KIND,KIND",
                            help=f"pseudo-queries to make, in order of preference per document: {', '.join(KINDS)} "
                                 "(relevance/pseudo_queries.py; default: all with --pseudo-only, else title)")
        parser.add_argument("--pseudo-only", action="store_true",
                            help="train on pseudo-queries alone (no judgment trained on; --pseudo-queries "
                                 "defaults to 2000): the judged queries, if any, all decide the install, else a "
                                 "--heldout share of the pseudo-queries held out as silver queries does")
        parser.add_argument("--mode", choices=offline.REPORT_ORDER, default="hybrid", help="first stage to mine from")
        parser.add_argument("--batch-groups", type=int, default=d.groups_per_batch,
                            help="groups (1 positive + K negatives) per optimiser step")
        parser.add_argument("--lr-body", type=float, default=d.lr_body)
        parser.add_argument("--lr-head", type=float, default=d.lr_head)
        parser.add_argument("--heldout", type=float, default=d.heldout_fraction, help="share of judged queries held out")
        parser.add_argument("--rerank-top", type=int, default=settings.RERANK_TOP_N,
                            help="held-out evaluation reranks this many candidates (default RERANK_TOP_N)")
        parser.add_argument("--seed", type=int, default=d.seed)
        parser.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: epochs decide)")
        parser.add_argument("--device", default="auto", help="auto (cuda when present), cuda, mps or cpu")
        parser.add_argument("--precision", default=settings.RERANKER_PRECISION, choices=PRECISIONS,
                            help="default RERANKER_PRECISION; auto: bfloat16 autocast on CUDA and on CPUs with native "
                                 "bfloat16, else float32 (RERANKER_PRECISION=float32 trains as a CPU without "
                                 "bfloat16 would)")
        parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
        parser.add_argument("--layers", type=int, default=d.layers,
                            help="keep the base's first N transformer layers (0: all; 2 gives a CPU-speed reranker)")
        parser.add_argument("--pooling", choices=POOLINGS, default=d.pooling,
                            help="how a new head reads the pair's token states: auto (the base's own "
                                 "sentence-transformers pooling: mean for MiniLM, cls for bge), mean or cls")
        parser.add_argument("--freeze-embeddings", action="store_true",
                            help="do not update the token embeddings (faster steps on a CPU)")
        parser.add_argument("--output", help="parent folder of the versioned model directory "
                                             "(default var/rerankers)")
        parser.add_argument("--no-install", action="store_true", help="never make it the collection's reranker")
        parser.add_argument("--replace-if-better", action="store_true",
                            help="where the collection has a reranker, install the new one only if it also beats "
                                 "that one on the same held-out queries (the runs for new judgments do)")
        parser.add_argument("--save-data", help="mine, write the training data to this file (.json or .json.gz), stop")
        parser.add_argument("--data", help="train from a file written by --save-data instead of mining")
        parser.add_argument("--install-trained", metavar="DIR",
                            help="install a model trained elsewhere (`python -m reranker.training`, e.g. on a GPU) "
                                 "after checking the held-out numbers in its training.json; no training")

    def handle(self, *args, **options):
        collection = Collection.objects.filter(slug=options["collection"]).first()
        if collection is None:
            raise CommandError(f"no collection with slug {options['collection']!r}")
        check_options(options)
        if options["install_trained"]:
            message = install_trained(collection, Path(options["install_trained"]).resolve(), self.stdout)
            self.stdout.write(self.style.SUCCESS(message))
            return
        outcome = train_collection(collection, options, self.stdout)
        if outcome.refusal:
            raise CommandError(outcome.refusal)
        if outcome.directory is not None:
            self.stdout.write(self.style.SUCCESS(outcome.message))
