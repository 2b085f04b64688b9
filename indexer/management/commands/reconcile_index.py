"""Compare database statuses with Elasticsearch and re-queue what is missing or stale.

    python manage.py reconcile_index [<collection-slug> ...] [--older-than SECONDS] [--retry-failed]

Run it after Redis lost its queues (a flush, a restart without persistence); celery beat also
runs it every RECONCILE_INTERVAL seconds. See indexer/reconcile.py and indexer/tasks.py.
"""
from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from indexer.models import Collection
from indexer.tasks import reconcile_collection


class Command(BaseCommand):
    help = "Re-queue documents whose index entries are missing or stale; delete orphaned chunks."

    def add_arguments(self, parser):
        parser.add_argument("collections", nargs="*", help="collection slugs (default: all)")
        parser.add_argument("--older-than", type=float, default=None,
                            help="seconds a document may stay queued before its message counts as "
                                 f"lost (default RECONCILE_OLDER_THAN={settings.RECONCILE_OLDER_THAN})")
        parser.add_argument("--retry-failed", action="store_true", help="also re-queue failed documents")
        parser.add_argument("--dry-run", action="store_true", help="report only")

    def handle(self, *args, collections, older_than=None, retry_failed=False, dry_run=False, **options):
        qs = Collection.objects.order_by("slug")
        if collections:
            unknown = set(collections) - set(qs.filter(slug__in=collections).values_list("slug", flat=True))
            if unknown:
                raise CommandError(f"unknown collection(s): {', '.join(sorted(unknown))}")
            qs = qs.filter(slug__in=collections)
        for pk in qs.values_list("pk", flat=True):
            report = reconcile_collection(pk, older_than=older_than, retry_failed=retry_failed, dry_run=dry_run)
            self.stdout.write(
                f"{report.collection}: {report.queued} queued, {report.marked_indexed} marked indexed, "
                f"{report.orphans} orphaned documents' chunks deleted"
                + (f" (build {report.build} in progress)" if report.build else "")
                + (" [dry run]" if dry_run else "")
            )
