"""Real Celery worker processes for the end-to-end tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = os.environ["ELASTICSEARCH_INDEX_PREFIX"].removeprefix("test-")


def worker_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    # The worker must see the test database, not the development one.
    env["DATABASE_URL"] = f"sqlite:///{settings.DATABASES['default']['TEST']['NAME']}"
    env.update(extra or {})
    return env


class Worker:
    """One `celery worker` process consuming one queue."""

    def __init__(self, queue: str, concurrency: int = 1, extra_env: dict | None = None):
        self.queue = queue
        self.concurrency = concurrency
        self.extra_env = extra_env or {}
        self.name = f"{queue}-{RUN_ID}@{os.uname().nodename}"
        self.log_path = Path(os.environ["SEARCHSITE_TEST_TMP"]) / f"worker-{queue}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> "Worker":
        self.log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "searchsite", "worker", "-Q", self.queue,
             "-c", str(self.concurrency), "-n", self.name, "-l", "info",
             "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=worker_env(self.extra_env), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()  # a worker that never became ready is not left running
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        from searchsite.celery import app

        # A worker on a broker of its own (CELERY_BROKER_URL) cannot be pinged from here (this
        # process's control messages go out through its own broker): its log says when it is ready.
        own_broker = "CELERY_BROKER_URL" in self.extra_env
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if own_broker:
                if f"{self.name} ready." in self.log_since_start():
                    return
                time.sleep(0.5)
            elif app.control.ping(destination=[self.name], timeout=0.5):
                return
        raise RuntimeError(f"worker {self.name} did not answer pings in {timeout}s:\n{self.log_tail()}")

    def log_since_start(self) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(self.log_start)
            return log.read().decode(errors="replace")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """kill -9 the whole worker (main process and its pool children)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 30) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
