"""The project on PostgreSQL (production and docker-compose use it through DATABASE_URL).

A throwaway server is started from the machine's own PostgreSQL binaries (initdb, pg_ctl);
where there are none the tests are skipped, saying so.
"""
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import redis
from django.conf import settings

from tests.support.workers import ROOT


def _services_script():
    """scripts/services.py (not a package): where `make test` looks for PostgreSQL's binaries,
    so the test finds the same ones."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("project_services", ROOT / "scripts" / "services.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pg_binary = _services_script().pg_binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    initdb, pg_ctl = pg_binary("initdb"), pg_binary("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) on this machine")
    # PostgreSQL refuses to run as root: as root, run it as the `postgres` user.
    prefix = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run PostgreSQL as")
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="searchsite-pg-"))
    data, port = root / "data", free_port()

    def run(*args: str) -> None:
        result = subprocess.run([*prefix, *args], capture_output=True, text=True)
        if result.returncode != 0:
            log = (root / "log").read_text(errors="replace")[-2000:] if (root / "log").exists() else ""
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stdout}{result.stderr}{log}")

    try:
        if prefix:
            shutil.chown(root, "postgres")
        run(initdb, "-D", str(data), "-A", "trust", "-U", "postgres")
        run(pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "start",
            "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1")
        yield f"postgres://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def run_race(postgres_url: str, scenario: str) -> dict:
    prefix = f"pgrace-{uuid.uuid4().hex[:8]}:"  # its indexing messages go nowhere near a worker
    env = dict(os.environ, DATABASE_URL=postgres_url, CELERY_KEY_PREFIX=prefix)
    try:
        result = subprocess.run([sys.executable, str(ROOT / "tests" / "support" / "postgres_race.py"), scenario], env=env,
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        client = redis.Redis.from_url(settings.REDIS_URL)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["vendor"] == "postgresql"
    return report


def test_concurrent_imports_into_one_collection_both_succeed(postgres_url):
    """Two imports of the same new external ids at once: before the collection row was locked,
    the second insert died on the unique constraint (IntegrityError) and its whole import was
    lost. Now the second waits, finds the first one's documents and updates them."""
    report = run_race(postgres_url, "race")
    imports = report["imports"]
    assert all("error" not in outcome for outcome in imports.values()), imports
    assert sorted(outcome["created"] for outcome in imports.values()) == [0, 3000]
    assert sorted(outcome["updated"] for outcome in imports.values()) == [0, 3000]
    assert report["documents"] == 3000


def test_a_web_import_behind_another_one_says_so_at_once(postgres_url):
    """The admin upload does not wait behind a long import (gunicorn would cut it off and the
    upload would be lost as a 502): it is told at once, and writes nothing."""
    report = run_race(postgres_url, "busy")
    assert report["outcome"] == "ImportBusy: another import into 'busy' is running; try again when it has finished"
    assert report["documents"] == 0
