"""Drive the project's own service script from the tests (integration tests that stop and
restart Elasticsearch or Redis)."""
from __future__ import annotations

import subprocess
import sys

from tests.support.workers import ROOT


def services(*args: str) -> None:
    """Drive the project's own service script (stop/start Elasticsearch or Redis)."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "services.py"), *args], check=True)
