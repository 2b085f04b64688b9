"""python manage.py export_reranker DIR [--judge-on COLLECTION]: the OpenVINO export of any
cross-encoder directory, for the CPU rerank workers (reranker/openvino_export.py).

`train_reranker` exports the models it trains, calibrates their int8 model and judges it on
their held-out queries; this does the same for a directory made elsewhere (a Hugging Face
cross-encoder saved locally, a model trained on a GPU). Without --judge-on only the float32
model is made, so CPU workers run it in float32. With it, int8 is calibrated on title
pseudo-queries of the collection and judged on its judged queries (their hybrid first-stage
candidates): int8 serves only if it keeps the model's nDCG@10 within 0.005 of float32.
"""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from common.progress import progress

from indexer.models import Collection
from relevance.collection_training import mine
from reranker.cross_encoder import directory_token_limit
from reranker.fusion import load_fusion
from reranker.openvino_export import (CALIBRATION_PAIRS, CALIBRATION_PAIRS_PER_QUERY, ExportError, calibration_pairs,
                                      export)
from reranker.scorers import thread_count
from reranker.training import int8_judgment


class Command(BaseCommand):
    help = "Export a cross-encoder directory to OpenVINO for the CPU rerank workers; optionally judge int8 on a collection."

    def add_arguments(self, parser):
        parser.add_argument("directory", help="a cross-encoder model directory")
        parser.add_argument("--force", action="store_true", help="export again even if an intact export exists")
        parser.add_argument("--judge-on", metavar="COLLECTION",
                            help="make the int8 model and judge it on this collection's judged queries (hybrid first stage)")
        parser.add_argument("--queries", type=int, default=200, help="judged queries used for --judge-on (at most)")
        parser.add_argument("--top", type=int, default=settings.RERANK_TOP_N, help="candidates reranked per query")

    def handle(self, *args, directory, force, judge_on, queries, top, **options):
        path = Path(directory).resolve()
        if not (path / "config.json").is_file():
            raise CommandError(f"{path} is not a model directory (no config.json)")
        if queries < 1 or top < 1:
            raise CommandError("--queries and --top must be at least 1")
        collection = None
        if judge_on:
            collection = Collection.objects.filter(slug=judge_on).first()
            if collection is None:
                raise CommandError(f"no collection with slug {judge_on!r}")
        try:
            state = export(path, force=force)
        except ExportError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"OpenVINO export in {state.folder} ({'float32 and int8' if state.has_int8 else 'float32'})")
        if collection is None:
            self.stdout.write(f"int8: {state.int8_reason}; CPU workers run it in "
                              f"{'int8' if state.int8_allowed else 'float32'}")
            return
        # Title pseudo-queries calibrate; the judged queries judge (never the same queries).
        data = mine(collection, "hybrid", max(2 * top, 100), CALIBRATION_PAIRS // CALIBRATION_PAIRS_PER_QUERY, 13,
                    self.stdout)
        judged = data.queries[:queries]
        if not judged:
            raise CommandError(f"{collection.slug} has no judged queries with a relevant document to judge int8 on")
        calibration = calibration_pairs([*data.pseudo_queries, *data.queries[queries:]], data.documents)
        if not calibration:
            raise CommandError(f"{collection.slug} gave no calibration pairs (no document has a title?)")
        limit = directory_token_limit(str(path))
        try:
            judgment, _ = int8_judgment(path, judged, data.documents, top, "hybrid", load_fusion(path), limit,
                                        settings.RERANKER_BATCH_SIZE, thread_count(settings.RERANKER_THREADS),
                                        progress=lambda total, desc: progress(total=total, desc=desc, unit="query"),
                                        calibration=calibration, echo=self.stdout.write)
        except ExportError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(
            f"int8 {'allowed' if judgment['allowed'] else 'refused'}: {judgment['reason']}"))
