from django.core.management.base import BaseCommand, CommandError

from indexer.models import Collection
from relevance.judgments import export_judgments


class Command(BaseCommand):
    help = "Export a collection's judgments as BEIR files: <dir>/queries.jsonl and <dir>/qrels.tsv."

    def add_arguments(self, parser):
        parser.add_argument("collection", help="collection slug")
        parser.add_argument("directory", help="output folder (created if missing)")

    def handle(self, *args, **options):
        try:
            collection = Collection.objects.get(slug=options["collection"])
        except Collection.DoesNotExist:
            raise CommandError(f"no collection with slug {options['collection']!r}") from None
        queries_path, qrels_path, lines = export_judgments(collection, options["directory"])
        self.stdout.write(f"{lines} judgments written to {qrels_path} (queries: {queries_path})")
