"""Make the int8 model of a bi-encoder for the CPU and judge it on held-out judged queries.

    python manage.py quantize_embedding bge-small-en-v1.5 --judge-on ../shared/datasets/scifact --split train
        [--queries 300 --documents 2000 --calibration 300] [--judge-only] [--if-missing]

Calibrates on documents of the BEIR folder that no judged query of the sample points to, then
measures nDCG@10 of exact search over a sample of its documents with float32 and int8 vectors.
The int8 model serves (EMBEDDING_RUNTIME=auto on a CPU) only if it is within 0.005 of float32;
the verdict and the speed on this CPU are written beside the export (int8.json). An index keeps
the vectors it was built with: rebuild a collection to index it with int8 vectors.
`--if-missing` (as `make models` runs it) does nothing where a judged int8 model of this export
is already there.
"""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from relevance.embedding_int8 import CALIBRATION_DOCUMENTS, existing_judgment, quantize_and_judge


class Command(BaseCommand):
    help = "Quantise a bi-encoder to int8 for the CPU and judge it against float32 on held-out queries."

    def add_arguments(self, parser):
        parser.add_argument("model", help="installed model name or directory")
        parser.add_argument("--judge-on", required=True, type=Path, help="a BEIR folder (corpus, queries, qrels/)")
        parser.add_argument("--split", default="train", help="qrels split judged on (default train; keep dev for reports)")
        parser.add_argument("--queries", type=int, default=300, help="judged queries sampled (default 300)")
        parser.add_argument("--documents", type=int, default=2000, help="documents searched (default 2000)")
        parser.add_argument("--calibration", type=int, default=CALIBRATION_DOCUMENTS,
                            help=f"documents the int8 ranges are calibrated on (default {CALIBRATION_DOCUMENTS})")
        parser.add_argument("--judge-only", action="store_true", help="judge the int8 model made before again")
        parser.add_argument("--if-missing", action="store_true",
                            help="do nothing where this model's export already has a judged int8 model")

    def handle(self, *args, **options):
        folder = options["judge_on"]
        for needed in ("corpus.jsonl", "queries.jsonl", f"qrels/{options['split']}.tsv"):
            if not (folder / needed).is_file():
                raise CommandError(f"{folder} has no {needed}")
        if options["calibration"] < 8:
            raise CommandError("--calibration needs at least 8 documents")
        try:
            if options["if_missing"]:
                judgment = existing_judgment(options["model"])
                if judgment:
                    verdict = "serves" if judgment["allowed"] else "does not serve"
                    self.stdout.write(f"{options['model']}: int8 already judged ({judgment['reason']}); it {verdict}")
                    return
            result = quantize_and_judge(options["model"], folder, options["split"], options["queries"],
                                        options["documents"], quantize=not options["judge_only"],
                                        calibration_documents=options["calibration"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        speed = result.speed["documents_per_second"]
        self.stdout.write(f"{options['model']}: {result.record['reason']}")
        self.stdout.write(f"documents/s on this CPU ({', '.join(result.speed['cpu']['flags'])}): float32 "
                          f"{speed['float32']}, int8 {speed['int8']} ({speed['int8'] / speed['float32']:.2f}x)")
        self.stdout.write("int8 serves this model" if result.record["allowed"] else "int8 does NOT serve this model")
