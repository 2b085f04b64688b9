"""Choose the hybrid mode's fusion rule of a collection on its judged queries and record it.

    python manage.py choose_fusion scifact --queries ../shared/datasets/scifact/queries.jsonl \
        --qrels ../shared/datasets/scifact/qrels/train.tsv

Without --queries/--qrels the collection's own judgments decide. Choose on train queries and
measure on others (`evaluate ... --qrels dev.tsv`): a rule chosen and measured on the same
queries looks better than it is. --show prints what is recorded; --clear goes back to the
language's default; --dry-run chooses without recording.
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from indexer.models import Collection
from relevance.evaluation import load_judgments
from relevance.fusion_choice import choose_fusion


class Command(BaseCommand):
    help = "Choose and record the hybrid fusion rule of a collection on judged queries."

    def add_arguments(self, parser):
        parser.add_argument("collection", help="collection slug")
        parser.add_argument("--queries", help="BEIR queries.jsonl (default: the collection's judgments)")
        parser.add_argument("--qrels", help="qrels TSV (default: the collection's judgments)")
        parser.add_argument("--depth", type=int, default=100, help="chunks of each list fused (default 100)")
        parser.add_argument("--dry-run", action="store_true", help="choose and print, record nothing")
        parser.add_argument("--show", action="store_true", help="print the recorded rule and stop")
        parser.add_argument("--clear", action="store_true", help="forget the recorded rule (the default applies)")

    def handle(self, *args, **options):
        collection = Collection.objects.filter(slug=options["collection"]).first()
        if collection is None:
            raise CommandError(f"no collection with slug {options['collection']!r}")
        if options["show"]:
            self.stdout.write(str(collection.hybrid_fusion or "nothing recorded: the language's default applies"))
            return
        if options["clear"]:
            collection.hybrid_fusion = {}
            collection.save(update_fields=["hybrid_fusion", "updated_at"])
            self.stdout.write(f"{collection.slug}: fusion rule cleared; the language's default applies")
            return
        if options["depth"] < 1:
            raise CommandError("--depth must be 1 or more")
        queries, qrels, too_long = load_judgments(collection, options["queries"], options["qrels"])
        try:
            choice = choose_fusion(collection, queries, {q: r for q, r in qrels.items() if q not in too_long},
                                   depth=options["depth"], record=not options["dry_run"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{collection.slug}: {choice.summary}")
