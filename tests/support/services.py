"""Drive the project's own service script from the tests (integration tests that stop and
restart Elasticsearch or Redis)."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.support.workers import ROOT


def services(*args: str, env: dict | None = None) -> None:
    """Drive the project's own service script (stop/start Elasticsearch or Redis); `env` is added
    to the environment (ES_NODES, ES_PORT, REDIS_PORT... of a cluster or Redis of the tests' own)."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "services.py"), *args], check=True,
                   env=dict(os.environ, **(env or {})))
