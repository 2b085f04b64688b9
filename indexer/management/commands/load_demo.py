"""python manage.py load_demo: the `scifact` demo collection, created and imported once, with
its relevance judgments (BEIR qrels/train.tsv), from which `demo_reranker` trains its reranker.

Safe to run at every `make run`: a second run finds every document unchanged and queues nothing,
and the judgments are already there. The data set is ../shared/datasets/scifact next to the
project, or the folder in DEMO_DATASET.
"""
from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from indexer.models import Collection

DEMO_SLUG = "scifact"


class Command(BaseCommand):
    help = "Create the scifact demo collection and import its corpus (idempotent)."

    def handle(self, *args, verbosity, **options):
        explicit = os.environ.get("DEMO_DATASET")
        path = Path(explicit).expanduser() if explicit else settings.BASE_DIR.parent / "shared" / "datasets" / "scifact"
        if not (path / "corpus.jsonl").is_file():
            if explicit:
                raise CommandError(f"DEMO_DATASET={explicit}: no BEIR corpus.jsonl there")
            # Without the data set the site still runs; say so instead of failing `make run`.
            self.stdout.write(self.style.WARNING(
                f"No demo data set at {path} (set DEMO_DATASET to a BEIR folder); skipping the demo collection."))
            return
        self.stdout.write(f"Demo collection {DEMO_SLUG!r} from {path}:")
        # English analysis for a new demo collection; one created before languages existed keeps
        # what its index serves (`none`) until `rebuild_index scifact --language en`.
        existing = Collection.objects.filter(slug=DEMO_SLUG).values_list("language", flat=True).first()
        # The demo is there to be searched by anyone (new collections are not, by default:
        # settings.DEFAULT_COLLECTION_VISIBILITY); an existing one keeps what an admin chose.
        access = {} if existing else {"visibility": Collection.Visibility.PUBLIC}
        call_command("import_corpus", DEMO_SLUG, str(path), create=True, name="SciFact", format="beir",
                     language=existing or "en", verbosity=verbosity, stdout=self.stdout, stderr=self.stderr,
                     **access)
        if existing == "none":
            self.stdout.write(f"Collection {DEMO_SLUG!r} searches keywords without stemming or stop words (language "
                              f"none, from before languages existed); `manage.py rebuild_index {DEMO_SLUG} --language en` "
                              "switches it to English analysis without downtime.")
        qrels = path / "qrels" / "train.tsv"
        if (path / "queries.jsonl").is_file() and qrels.is_file():
            self.stdout.write(f"Judgments for {DEMO_SLUG!r} from {qrels}:")
            call_command("import_judgments", DEMO_SLUG, queries=str(path / "queries.jsonl"), qrels=str(qrels),
                         stdout=self.stdout, stderr=self.stderr)
