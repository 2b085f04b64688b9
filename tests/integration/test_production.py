"""The site as docker compose runs it: the real gunicorn with DEBUG off serves the admin's static
files (WhiteNoise, after collectstatic). The deploy settings check: tests/unit/test_deploy.py."""
from __future__ import annotations

import gzip
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from tests.support.workers import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_gunicorn_with_debug_off_serves_admin_styles(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")} | {
        "DJANGO_SETTINGS_MODULE": "searchsite.settings",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    collected = subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=300)
    assert collected.returncode == 0, collected.stderr
    assert (tmp_path / "static" / "admin" / "css" / "base.css").is_file()

    log = open(tmp_path / "gunicorn.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "searchsite.wsgi", "-b", f"127.0.0.1:{port}",
                               "-w", "1", "--timeout", "60"], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "gunicorn.log").read_text(errors="replace")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not listen within 60 s"
                time.sleep(0.2)

        status, headers, body = fetch(f"{base}/static/admin/css/base.css")
        assert status == 200
        assert headers["Content-Type"].startswith("text/css")
        assert body == (tmp_path / "static" / "admin" / "css" / "base.css").read_bytes()
        # The gzip copy collectstatic made, to clients that accept it.
        status, headers, body = fetch(f"{base}/static/admin/css/base.css", {"Accept-Encoding": "gzip"})
        assert status == 200 and headers.get("Content-Encoding") == "gzip"
        assert gzip.decompress(body) == (tmp_path / "static" / "admin" / "css" / "base.css").read_bytes()
        # Only what is there: a missing file is still a 404.
        assert fetch(f"{base}/static/admin/css/no-such-file.css")[0] == 404
        # The admin's login page links the stylesheet that was just served.
        status, _, page = fetch(f"{base}/admin/login/")
        assert status == 200 and b"/static/admin/css/base.css" in page
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)
        log.close()
