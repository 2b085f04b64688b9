"""Two imports of the same new external ids into one collection at the same moment.

Run by tests/test_postgres.py in a process of its own with DATABASE_URL set to a throwaway
PostgreSQL server; prints one JSON line: each import's outcome and the number of documents.
"""
import json
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from indexer.importing import Source, import_sources  # noqa: E402
from indexer.models import Collection, Document  # noqa: E402

DOCUMENTS = 3000


def main() -> None:
    call_command("migrate", verbosity=0)
    collection = Collection.objects.create(name="Race", slug="race")
    barrier = threading.Barrier(2)
    outcome = {}

    def run(tag: str) -> None:
        try:
            data = "\n".join(json.dumps({"_id": f"d{i}", "title": f"t{i}", "text": f"text {i} from {tag}"})
                             for i in range(DOCUMENTS)).encode()
            barrier.wait()
            report = import_sources(collection, [Source(f"{tag}.jsonl", len(data), lambda: data)])
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
    print(json.dumps({"imports": outcome, "documents": Document.objects.filter(collection=collection).count(),
                      "vendor": connection.vendor}))


if __name__ == "__main__":
    main()
