"""What every service shares: messages, pid files, where state lives, HTTP on loopback, the
run-as user, a JDK, Maven Central and apt-get.

Only the standard library: this runs before the virtualenv exists."""
from __future__ import annotations

import base64
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
# Pid files, logs, the password and downloads; the Django settings read the password from here.
STATE = Path(os.environ.get("SERVICES_DIR", ROOT / ".services"))
# One folder per checkout under /var/lib (see runtime_dir).
CHECKOUT_ID = hashlib.sha1(str(ROOT).encode()).hexdigest()[:10]


def say(msg: str) -> None:
    print(f"[services] {msg}", flush=True)


def fail(msg: str) -> None:
    print(f"[services] ERROR: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def pid_alive(pidfile: Path) -> int | None:
    """The pid in `pidfile` if that process runs, else None."""
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return f"(no log at {path})"


def runtime_dir(variable: str, prefix: str) -> Path:
    """Where a JVM service's distribution, data and logs live: $variable, else STATE, or as root
    /var/lib/searchsite/<prefix>-<checkout>: the unprivileged user the node then runs as may not
    be able to enter the checkout (a clone under a mode-700 temp dir, say)."""
    if os.geteuid() == 0:
        return Path(os.environ.get(variable, f"/var/lib/searchsite/{prefix}-{CHECKOUT_ID}"))
    return Path(os.environ.get(variable, STATE))


def http_get(port: int, path: str, timeout: float = 5.0,
             auth: tuple[str, str] | None = None) -> tuple[int, str]:
    """(HTTP status, body) of a GET on 127.0.0.1:port; (0, error) when nothing answers."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def stop_process(pidfile: Path, stopped: str, not_running: str, seconds: float, interval: float,
                 kill: bool = True) -> None:
    """SIGTERM the process of `pidfile` and wait up to `seconds` for it to go; then SIGKILL it
    (`kill`), or leave it and its pid file for another try."""
    pid = pid_alive(pidfile)
    if not pid:
        say(not_running)
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(round(seconds / interval)):
        if not pid_alive(pidfile):
            break
        time.sleep(interval)
    else:
        if kill:
            os.kill(pid, signal.SIGKILL)
    if kill or not pid_alive(pidfile):
        pidfile.unlink(missing_ok=True)
    say(stopped)


def ensure_user(name: str, what: str) -> str | None:
    """The user `what` runs as: ourselves (None) unless we are root, else the system user `name`."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError:
        say(f"creating system user {name!r} ({what} refuses to run as root)")
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
        )
    return name


def write_private(path: Path, text: str) -> None:
    """`text` into `path`, root-only: created 0600 (never briefly world-readable), never through a link."""
    if path.is_symlink():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600, follow_symlinks=False)


def find_java_home(override: str, what: str) -> Path:
    """A JDK 21 or newer: $override if set, else the newest under /usr/lib/jvm."""
    if os.environ.get(override):
        return Path(os.environ[override])
    candidates = []
    for d in Path("/usr/lib/jvm").glob("*"):
        java = d / "bin" / "java"
        if not java.exists() or d.is_symlink():
            continue
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True).stderr
        try:
            major = int(out.split('"')[1].split(".")[0])
        except (IndexError, ValueError):
            continue
        if major >= 21:
            candidates.append((major, d))
    if not candidates:
        fail(
            f"{what} needs a JDK 21 or newer and none was found under /usr/lib/jvm; "
            "install one (e.g. apt-get install openjdk-21-jdk-headless where available) "
            f"or set {override}."
        )
    return max(candidates)[1]


def mvn_copy(artifact: str) -> Path:
    """`artifact` (group:name:version:zip) from Maven Central into STATE/dist/name-version.zip.

    Cached twice: the copy in dist/ and mvn's own ~/.m2, so a second run downloads nothing.
    A failed fetch names the artifact (the version is what usually does not resolve)."""
    _, name, version, kind = artifact.split(":")
    dist = STATE / "dist"
    path = dist / f"{name}-{version}.{kind}"
    if path.exists():
        return path
    if not shutil.which("mvn"):
        fail(f"Maven (mvn) is needed to fetch {artifact}: apt-get install maven")
    dist.mkdir(parents=True, exist_ok=True)
    say(f"fetching {artifact} with mvn dependency:copy (cached in ~/.m2)")
    result = subprocess.run(
        ["mvn", "-B", "-q", "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy",
         f"-Dartifact={artifact}", f"-DoutputDirectory={dist}"],
        cwd=STATE, capture_output=True, text=True,
    )
    if result.returncode != 0 or not path.exists():
        print(result.stdout[-4000:], result.stderr[-4000:], sep="\n", file=sys.stderr)
        fail(f"mvn could not fetch {artifact} (exit {result.returncode}; mvn's output above)")
    return path


def apt_install(*packages: str) -> None:
    """Debian packages (or apt-get options such as --no-install-recommends), as root."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", *packages], check=True, env=env,
                   stdout=subprocess.DEVNULL)
