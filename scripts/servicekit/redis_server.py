"""Redis: Debian's `redis-server` (installed with apt-get when missing, as root), daemonised on
127.0.0.1:$REDIS_PORT with nothing persisted; its pid file, log and folder under STATE."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

from servicekit.base import STATE, apt_install, fail, say, stop_process, tail

REDIS_PORT = int(os.environ.get("REDIS_PORT", "6379"))
REDIS_DIR = STATE / "redis"
REDIS_PIDFILE = STATE / "redis.pid"
REDIS_LOG = STATE / "redis.log"


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0:
        fail("redis-server is missing: install Debian's redis-server package")
    say("installing Debian's redis-server")
    apt_install("redis-server")
    return shutil.which("redis-server") or "/usr/bin/redis-server"


def redis_ping() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis() -> None:
    if redis_ping():
        say(f"Redis already running on 127.0.0.1:{REDIS_PORT} (reused)")
        return
    binary = redis_binary()
    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [binary, "--bind", "127.0.0.1", "--port", str(REDIS_PORT), "--daemonize", "yes",
         "--pidfile", str(REDIS_PIDFILE), "--logfile", str(REDIS_LOG), "--dir", str(REDIS_DIR),
         "--save", "", "--appendonly", "no"],
        check=True,
    )
    for _ in range(50):
        if redis_ping():
            say(f"Redis is up on 127.0.0.1:{REDIS_PORT}")
            return
        time.sleep(0.1)
    print(tail(REDIS_LOG), file=sys.stderr)
    fail("Redis did not start")


def stop_redis() -> None:
    # Redis removes its pid file itself when it exits; one that outlives the wait keeps it.
    stop_process(REDIS_PIDFILE, "Redis stopped", "Redis not running (or not started by us)", 5, 0.1, kill=False)
