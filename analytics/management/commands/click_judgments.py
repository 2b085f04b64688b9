from django.core.management.base import BaseCommand

from analytics.click_judgments import derive_implicit_judgments
from relevance.auto_reranker import after_new_judgments


class Command(BaseCommand):
    help = ("Turn the search log's clicks into implicit judgments (position bias accounted for; "
            "docs/analytics.md), replacing the previous ones. Staff judgments are never touched. Then queues a "
            "reranker run for each collection whose judgments grew by AUTO_RERANKER_NEW_JUDGMENTS.")

    def handle(self, *args, **options):
        derivation = derive_implicit_judgments()
        self.stdout.write("examination by rank (relative to rank 1): " + ", ".join(
            f"{rank}: {value:.2f}" for rank, value in derivation.propensity.items()) if derivation.propensity
            else "no logged search showed results")
        self.stdout.write(derivation.summary())
        for slug, count in sorted(derivation.by_collection.items()):
            self.stdout.write(f"  {slug}: {count}")
        for run in after_new_judgments():  # AUTO_RERANKER_NEW_JUDGMENTS (relevance/auto_reranker.py)
            self.stdout.write(f"reranker run #{run.pk} queued for {run.collection.slug}: its judgments grew "
                              f"to {run.judgments}")
