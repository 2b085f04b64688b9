from django.core.management.base import BaseCommand, CommandError

from indexer.models import Collection
from relevance.judgments import JudgmentFileError, import_judgments, read_qrels, read_queries
from relevance.models import QUERY_MAX_LENGTH


class Command(BaseCommand):
    help = ("Import BEIR relevance judgments (queries.jsonl + qrels TSV) into a collection. "
            "Corpus ids are the collection's document external ids; re-importing is idempotent.")

    def add_arguments(self, parser):
        parser.add_argument("collection", help="collection slug")
        parser.add_argument("--queries", required=True, help="BEIR queries.jsonl")
        parser.add_argument("--qrels", required=True, help="qrels TSV (query-id, corpus-id, score)")

    def handle(self, *args, **options):
        try:
            collection = Collection.objects.get(slug=options["collection"])
        except Collection.DoesNotExist:
            raise CommandError(f"no collection with slug {options['collection']!r}") from None
        too_long: dict[str, int] = {}
        try:
            queries = read_queries(options["queries"], too_long=too_long)
            qrels = read_qrels(options["qrels"])
        except JudgmentFileError as exc:
            raise CommandError(f"{exc} (nothing imported)") from None
        # Queries the search would refuse (empty, or longer than QUERY_MAX_LENGTH) are left out with their
        # judgments, and said so; the rest is imported.
        skipped_lines = sum(len(qrels.pop(qid)) for qid in list(qrels) if qid in too_long)
        report = import_judgments(collection, queries, qrels)
        self.stdout.write(f"{collection.slug}: {report.summary()}")
        if too_long:
            self.stdout.write(self.style.WARNING(
                f"skipped {len(too_long)} queries that are empty or longer than {QUERY_MAX_LENGTH} characters "
                f"(e.g. {', '.join(sorted(too_long)[:5])}) and their {skipped_lines} qrels lines"))
        if report.skipped_lines:
            examples = sorted(report.unknown_documents)[:5] or sorted(report.unknown_queries)[:5]
            raise CommandError(f"{report.skipped_lines} qrels lines were not imported, e.g. {examples}; "
                               "the other judgments were imported")
