"""`manage.py import_corpus` in a real process: its exit status (the rest of the import engine,
without services: tests/unit/test_import.py). Integration because the process's Celery result
backend is the real Redis (REDIS_URL), even with the in-memory broker."""
import os
import subprocess
import sys

import pytest

from tests.support.files import write_beir
from tests.support.workers import ROOT
from tests.unit.test_import import DOCS

pytestmark = pytest.mark.django_db


def test_command_exit_status_in_a_real_process(tmp_path):
    """`manage.py import_corpus` exits 0 on a clean import and 1 when something was rejected.
    It runs against its own SQLite file; the broker is kombu's in-memory one, so the queued
    messages go nowhere (the indexing is not under test here)."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}",
           "CELERY_BROKER_URL": "memory://"}

    def manage(*args):
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)

    assert manage("migrate", "-v", "0").returncode == 0
    good = write_beir(tmp_path / "good", DOCS)
    bad = write_beir(tmp_path / "bad", DOCS)
    with open(bad / "corpus.jsonl", "ab") as corpus:
        corpus.write(b'{"_id": "x", "text": \n')
    first = manage("import_corpus", "cli", str(good), "--create", "--no-chunk-count")
    assert first.returncode == 0, first.stderr
    assert "Created 5, updated 0, unchanged 0" in first.stdout
    second = manage("import_corpus", "cli", str(bad), "--no-chunk-count")
    assert second.returncode == 1
    assert "unchanged 5" in second.stdout
    assert "rejected corpus.jsonl line 6: not valid JSON" in second.stderr
