"""python manage.py demo_reranker: the demo collection's reranker, trained on first start.

Run by `make run` (the `demo` process of the Procfile) beside the web server and the workers:

1. A collection whose reranker is already set and loads: nothing to do ("cached").
2. A reranker trained by an earlier start (var/rerankers/<slug>-reranker-*, installed then,
   e.g. before the database was reset) is installed again instead of training anew.
3. Otherwise it waits until the embed workers have indexed the collection (progress bar), then
   runs `train_reranker` with the recipe of the machine (`--recipe`): on CUDA the full
   six-layer model; on a CPU a two-layer cut of the same base, short pairs and one pass over
   the data, sized so that the whole `make run` installs it within minutes on 2 cores without
   bfloat16 (measurements: docs/relevance.md). `train_reranker` installs the model only if the
   search with it beats the first stage on held-out queries; until then, and if it does not,
   the search says "not reranked: ...".

The rerank worker loads the collection's model from the message of each request, so nothing
needs restarting when it is installed.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from common.progress import progress

from indexer.models import Collection, Document
from relevance.collection_training import RECIPES, models_dir
from common.precision import pick_device

def trained_before(slug: str) -> Path | None:
    """The newest model directory an earlier `train_reranker` run installed for this collection."""
    for directory in sorted(models_dir().glob(f"{slug}-reranker-*"), reverse=True):
        try:
            report = json.loads((directory / "training.json").read_text())
        except (OSError, ValueError):
            continue
        if str(report.get("installed", "")).startswith("yes") and (directory / "config.json").is_file():
            return directory
    return None


class Command(BaseCommand):
    help = "Give the demo collection a reranker: reuse one trained before, or train one once it is indexed."

    def add_arguments(self, parser):
        parser.add_argument("--collection", default="scifact")
        parser.add_argument("--poll", type=float, default=5.0, help="seconds between indexing checks")
        parser.add_argument("--device", default="auto", help="training device (auto: cuda when present)")
        parser.add_argument("--recipe", choices=["auto", *RECIPES], default="auto",
                            help="training settings (auto: cuda on a GPU, else cpu)")

    def handle(self, *args, collection, poll, device, recipe, **options):
        if poll <= 0:
            raise CommandError(f"--poll must be a positive number of seconds, not {poll}")
        col = Collection.objects.filter(slug=collection).first()
        if col is None:
            self.stdout.write(f"demo reranker: no collection {collection!r} (no demo data set); nothing to do")
            return
        if col.reranker_model and Path(col.reranker_model).is_dir():
            self.stdout.write(f"demo reranker: {col.slug} is reranked by {col.reranker_model} (cached)")
            return
        earlier = trained_before(col.slug)
        if earlier is not None:
            call_command("train_reranker", col.slug, install_trained=str(earlier), stdout=self.stdout)
            return
        if not col.judgments.exists():
            raise CommandError(f"demo reranker: {col.slug} has no judgments to train on (run load_demo)")
        self.wait_for_indexing(col, poll)

        kind = "cuda" if pick_device(device).startswith("cuda") else "cpu"
        chosen = RECIPES[kind if recipe == "auto" else recipe]
        self.stdout.write(f"demo reranker: training one for {col.slug} on {kind} with {chosen} "
                          "(first start only; the search is first-stage only until it is installed)")
        started = time.monotonic()
        try:
            call_command("train_reranker", col.slug, device=device, stdout=self.stdout, stderr=self.stderr, **chosen)
        except CommandError as exc:
            # Refused (does not beat the first stage) or failed: the site keeps working unreranked.
            self.stderr.write(f"demo reranker: not installed after {time.monotonic() - started:.0f} s: {exc}")
            return
        col.refresh_from_db()
        self.stdout.write(self.style.SUCCESS(
            f"demo reranker: {col.slug} is reranked by {col.reranker_model} "
            f"(trained in {time.monotonic() - started:.0f} s)"))

    def wait_for_indexing(self, col: Collection, poll: float) -> None:
        """Until no document of the collection is waiting or being indexed (failed ones are
        reported, not waited for)."""
        busy = (Document.Status.PENDING, Document.Status.QUEUED, Document.Status.INDEXING)
        documents = Document.objects.filter(collection=col).exclude(status=Document.Status.REMOVED)
        total = documents.count()
        bar = None
        while True:
            waiting = documents.filter(status__in=busy).count()
            if not waiting:
                break
            if bar is None:
                bar = progress(total=total, desc=f"demo reranker: waiting for {col.slug} to be indexed", unit="doc")
            bar.update(total - waiting - bar.n)
            time.sleep(poll)
        if bar is not None:
            bar.n = total
            bar.close()
        failed = documents.filter(status=Document.Status.FAILED).count()
        if failed:
            self.stderr.write(f"demo reranker: {failed} documents of {col.slug} failed to index; training without them")
