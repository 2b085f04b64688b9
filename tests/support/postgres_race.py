"""Imports racing for one collection, on PostgreSQL.

Run by tests/integration/test_postgres.py in a process of its own with DATABASE_URL set to a
throwaway PostgreSQL server; prints one JSON line.
- `race`: two imports of the same new external ids at the same moment; each import's outcome
  and the number of documents.
- `busy`: a web-style import (wait=False) while another transaction holds the collection.
"""
import json
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from django.db import transaction  # noqa: E402

from indexer.importing import ImportBusy, Source, import_sources  # noqa: E402
from indexer.models import Collection, Document  # noqa: E402

DOCUMENTS = 3000


def source(tag: str) -> Source:
    data = "\n".join(json.dumps({"_id": f"d{i}", "title": f"t{i}", "text": f"text {i} from {tag}"})
                     for i in range(DOCUMENTS)).encode()
    return Source(f"{tag}.jsonl", len(data), lambda: data)


def race() -> dict:
    collection = Collection.objects.create(name="Race", slug="race")
    barrier = threading.Barrier(2, timeout=60)
    outcome = {}

    def run(tag: str) -> None:
        try:
            data = source(tag)
            barrier.wait()
            report = import_sources(collection, [data])
            outcome[tag] = {"created": report.created, "updated": report.updated}
        except Exception as exc:
            outcome[tag] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(tag,)) for tag in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"imports": outcome, "documents": Document.objects.filter(collection=collection).count()}


def busy() -> dict:
    collection = Collection.objects.create(name="Busy", slug="busy")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                Collection.objects.select_for_update().filter(pk=collection.pk).first()
                holding.set()
                release.wait(60)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(60)
    try:
        import_sources(collection, [source("web")], wait=False)
        outcome = "imported"
    except ImportBusy as exc:
        outcome = f"ImportBusy: {exc}"
    finally:
        release.set()
        holder.join()
    return {"outcome": outcome, "documents": Document.objects.filter(collection=collection).count()}


if __name__ == "__main__":
    call_command("migrate", verbosity=0)
    result = {"race": race, "busy": busy}[sys.argv[1]]()
    print(json.dumps({**result, "vendor": connection.vendor}))
