"""manage.py create_api_key NAME --collections SLUG[,SLUG...] [--write] [--expires 30d|DATE]:
prints the new key once (only its hash is stored)."""
from django.core.management.base import BaseCommand, CommandError

from indexer.models import Collection

from ...keys import create_key, parse_expiry


class Command(BaseCommand):
    help = "Create an API key for some collections (read, or read and write) and print it once."

    def add_arguments(self, parser):
        parser.add_argument("name", help="who or what uses the key")
        parser.add_argument("--collections", required=True, help="collection slugs, comma-separated")
        parser.add_argument("--write", action="store_true", help="may also create, update and delete documents")
        parser.add_argument("--expires", help="30d, 12h, or a date (2027-01-31) or ISO date-time; default: never")

    def handle(self, *args, name, collections, write, expires, **options):
        name = name.strip()
        if not name:
            raise CommandError("give the key a name")
        slugs = list(dict.fromkeys(s.strip() for s in collections.split(",") if s.strip()))
        if not slugs:
            raise CommandError("--collections: give at least one collection slug")
        rows = list(Collection.objects.filter(slug__in=slugs))
        missing = sorted(set(slugs) - {c.slug for c in rows})
        if missing:
            raise CommandError(f"no collection {', '.join(map(repr, missing))}")
        try:
            expires_at = parse_expiry(expires) if expires else None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        row, key = create_key(name, rows, can_write=write, expires_at=expires_at, created_by="manage.py")
        self.stderr.write(f"API key {row.prefix}… for {name!r}: {row.access} on {', '.join(slugs)}"
                          f"{f', expires {expires_at.isoformat()}' if expires_at else ''}. It is printed once "
                          f"below; only its hash is stored.")
        self.stdout.write(key)
