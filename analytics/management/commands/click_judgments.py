from django.core.management.base import BaseCommand

from analytics.click_judgments import derive_implicit_judgments


class Command(BaseCommand):
    help = ("Turn the search log's clicks into implicit judgments (position bias accounted for; "
            "docs/analytics.md), replacing the previous ones. Staff judgments are never touched.")

    def handle(self, *args, **options):
        derivation = derive_implicit_judgments()
        self.stdout.write("examination by rank (relative to rank 1): " + ", ".join(
            f"{rank}: {value:.2f}" for rank, value in derivation.propensity.items()) if derivation.propensity
            else "no logged search showed results")
        self.stdout.write(derivation.summary())
        for slug, count in sorted(derivation.by_collection.items()):
            self.stdout.write(f"  {slug}: {count}")
