"""What the tests need installed but nothing starts: PostgreSQL's server binaries, headless
Chromium with its driver and Prometheus, Debian's packages installed with apt-get when missing (as root).

Each is a `Package`: how to tell it is there, what to say when it is not, and what to install.
Not root and missing: the run fails, unless ALLOW_SKIPS=1 lets the tests that need it skip."""
from __future__ import annotations

import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from servicekit.base import apt_install, fail, say


@dataclass
class Package:
    present: Callable[[], str | None]  # what is there, as `say` tells it; None: missing
    missing: str                       # what is missing and what to install
    skipped: str                       # the tests ALLOW_SKIPS skips
    installing: str
    apt: tuple[str, ...]               # apt-get install's arguments
    still_missing: str


def install(package: Package) -> None:
    found = package.present()
    if found:
        say(found)
        return
    if os.geteuid() != 0:
        if os.environ.get("ALLOW_SKIPS", "") not in ("", "0"):
            say(f"{package.missing}; {package.skipped} will be skipped (ALLOW_SKIPS)")
            return
        fail(f"{package.missing}, or set ALLOW_SKIPS=1 to skip {package.skipped}")
    say(package.installing)
    apt_install(*package.apt)
    if not package.present():
        fail(package.still_missing)


# ---------------------------------------------------------------- PostgreSQL (tests/integration/test_postgres.py)


def pg_binary(name: str) -> str | None:
    """Where tests/integration/test_postgres.py finds it: on PATH, else Debian's versioned folder."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def postgres_ready() -> bool:
    """initdb and pg_ctl, and as root the `postgres` user the tests run the server as."""
    if not (pg_binary("initdb") and pg_binary("pg_ctl")):
        return False
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False
    return True


POSTGRES = Package(
    present=lambda: (f"PostgreSQL server binaries present ({Path(pg_binary('initdb')).parent})"
                     if postgres_ready() else None),
    missing=("PostgreSQL's initdb and pg_ctl are missing (tests/integration/test_postgres.py starts a "
             "throwaway server from them): install Debian's postgresql package"),
    skipped="its tests",
    installing="installing Debian's postgresql (server binaries for the tests)",
    apt=("postgresql",),
    still_missing="postgresql was installed but initdb, pg_ctl or the postgres user is still missing",
)


# ---------------------------------------------------------------- Chromium (tests/integration/test_browser.py)

# Where tests/support/browser.py looks for them too (on PATH, where Debian puts them).
CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMEDRIVER_NAMES = ("chromedriver",)


def chromium_binaries() -> tuple[str | None, str | None]:
    browser = next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)
    driver = next((found for name in CHROMEDRIVER_NAMES if (found := shutil.which(name))), None)
    return browser, driver


def chromium_present() -> str | None:
    browser, driver = chromium_binaries()
    return f"Chromium present ({browser}, {driver})" if browser and driver else None


CHROMIUM = Package(
    present=chromium_present,
    missing=("Chromium or its driver is missing (tests/integration/test_browser.py drives headless Chromium): "
             "install Debian's chromium and chromium-driver packages"),
    skipped="the browser tests",
    installing="installing Debian's chromium and chromium-driver (headless browser for the tests)",
    # Selenium drives it with Debian's chromedriver, which matches the browser's version.
    apt=("--no-install-recommends", "chromium", "chromium-driver"),
    still_missing="chromium and chromium-driver were installed but chromium or chromedriver is still not on PATH",
)


# ---------------------------------------------------------------- Prometheus (tests/integration/test_metrics.py)


def prometheus_present() -> str | None:
    found = shutil.which("prometheus")
    return f"Prometheus present ({found})" if found else None


PROMETHEUS = Package(
    present=prometheus_present,
    missing=("Prometheus is missing (tests/integration/test_metrics.py starts one on a loopback port to scrape "
             "/metrics): install Debian's prometheus package"),
    skipped="the Prometheus scrape test",
    installing="installing Debian's prometheus (the scrape test; nothing is started)",
    # Its exporters and web console are not needed: the server binary alone.
    apt=("--no-install-recommends", "prometheus"),
    still_missing="prometheus was installed but is still not on PATH",
)

INSTALLS = {"postgres": POSTGRES, "chromium": CHROMIUM, "prometheus": PROMETHEUS}
