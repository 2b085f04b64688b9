from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from analytics.search_log import prune


class Command(BaseCommand):
    help = "Delete logged searches and their clicks older than SEARCH_LOG_DAYS (or --days)."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=None, help=f"default SEARCH_LOG_DAYS ({settings.SEARCH_LOG_DAYS})")

    def handle(self, *args, days=None, **options):
        if days is not None and days < 0:
            raise CommandError(f"--days must be 0 or more, not {days}")
        deleted = prune(days)
        self.stdout.write(f"{deleted} searches deleted (older than {settings.SEARCH_LOG_DAYS if days is None else days} days)")
