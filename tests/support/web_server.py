"""A real gunicorn serving the site for the tests that need one (tests/integration/test_load_shedding.py,
test_metrics.py): the production command (gthread workers, searchsite/gunicorn_conf.py for the
metrics of several processes), on a free loopback port, sharing the test database file and the
run's Elasticsearch and Redis prefixes with the test process and its workers."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tests.support.workers import ROOT, worker_env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    def __init__(self, name: str, workers: int = 1, threads: int = 4, extra_env: dict | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workers, self.threads = workers, threads
        tmp = Path(os.environ["SEARCHSITE_TEST_TMP"])
        self.log_path = tmp / f"gunicorn-{name}.log"
        self.metrics_dir = tmp / f"prometheus-{name}"
        self.env = worker_env({"PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir), **(extra_env or {})})
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> "Gunicorn":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "searchsite.wsgi", "-c", "searchsite/gunicorn_conf.py",
             "-b", f"127.0.0.1:{self.port}", "-w", str(self.workers), "--threads", str(self.threads),
             "--timeout", "120"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.get("/healthz")[0] in (200, 503):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gunicorn did not answer in {timeout} s:\n{self.log_tail()}")
            time.sleep(0.3)

    def get(self, path: str, params: dict | None = None, headers: dict | None = None,
            timeout: float = 60) -> tuple[int, dict, bytes]:
        url = self.base + path + ("?" + urllib.parse.urlencode(params, doseq=True) if params else "")
        request = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def get_json(self, path: str, params: dict | None = None, headers: dict | None = None) -> tuple[int, dict, dict]:
        status, headers_got, body = self.get(path, params, headers)
        return status, headers_got, json.loads(body)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
