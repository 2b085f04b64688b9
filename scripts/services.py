#!/usr/bin/env python3
"""Provision and run the project's local Elasticsearch and Redis on loopback.

    python scripts/services.py start [es|redis|all]
    python scripts/services.py stop  [es|redis|all]
    python scripts/services.py status
    python scripts/services.py install postgres
    python scripts/services.py install chromium

Elasticsearch is Elastic's own test distribution (`integ-test-zip`) of one pinned
version, fetched from Maven Central with `mvn dependency:copy` (cached in ~/.m2, so a
second run downloads nothing), unpacked under `.services/`, and run single-node on
127.0.0.1 with x-pack security on: the `elastic` user's password is generated once into
`.services/elastic-password`, which the Django settings read.  Elasticsearch refuses to
run as root, so when we are root it runs as the unprivileged system user `elasticsearch`.

Redis is Debian's `redis-server` (installed with apt-get when missing).

`install postgres` only makes sure PostgreSQL's server binaries (`initdb`, `pg_ctl`) are there,
installing Debian's `postgresql` with apt-get when missing (as root): the integration tests start
a throwaway server of their own from them (tests/integration/test_postgres.py). Nothing is started.

`install chromium` makes sure Debian's `chromium` and `chromium-driver` are there (apt-get, as
root, when missing): the browser tests (tests/browser) drive headless Chromium through Selenium
with Debian's chromedriver, which matches the browser's version.

Only the standard library is used: this runs before the virtualenv exists.
"""
from __future__ import annotations

import base64
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("SERVICES_DIR", ROOT / ".services"))

ES_VERSION = "9.1.0"  # pinned; the Python client in requirements.txt is elasticsearch 9.1.x
ES_ARTIFACT = f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{ES_VERSION}:zip"
ES_PORT = int(os.environ.get("ES_PORT", "9200"))
ES_TRANSPORT_PORT = int(os.environ.get("ES_TRANSPORT_PORT", str(ES_PORT + 100)))
# 2 GiB heap: a quarter of what a 2-core / 24 GiB machine can spare after the embedding
# models, and HNSW graphs live off-heap in the page cache anyway.
ES_HEAP = os.environ.get("ES_HEAP", "2g")
ES_USER = os.environ.get("ES_RUN_AS", "elasticsearch")
# As root, Elasticsearch runs as an unprivileged user that may not be able to enter the
# checkout (a clone under a mode-700 temp dir, say), so its files live under /var/lib, one
# folder per checkout.
if os.geteuid() == 0:
    _checkout_id = hashlib.sha1(str(ROOT).encode()).hexdigest()[:10]
    ES_RUNTIME = Path(os.environ.get("ES_RUNTIME_DIR", f"/var/lib/searchsite/es-{_checkout_id}"))
else:
    ES_RUNTIME = Path(os.environ.get("ES_RUNTIME_DIR", STATE))
ES_HOME = ES_RUNTIME / f"elasticsearch-{ES_VERSION}"
ES_DATA = ES_RUNTIME / "es-data"
ES_LOGS = ES_RUNTIME / "es-logs"
ES_TMP = ES_RUNTIME / "es-tmp"
ES_PIDFILE = STATE / "es.pid"
ES_PASSWORD_FILE = STATE / "elastic-password"
# As root the node's data lives outside the checkout and outlives it: a fresh clone at the
# same path finds the old data, whose security index holds the password of the clone before.
# A root-only copy of the password beside the data lets the new clone reuse it.
ES_RUNTIME_PASSWORD = ES_RUNTIME / "elastic-password" if ES_RUNTIME != STATE else None
ES_CLUSTER = "searchsite"

REDIS_PORT = int(os.environ.get("REDIS_PORT", "6379"))
REDIS_DIR = STATE / "redis"
REDIS_PIDFILE = STATE / "redis.pid"
REDIS_LOG = STATE / "redis.log"


def say(msg: str) -> None:
    print(f"[services] {msg}", flush=True)


def fail(msg: str) -> None:
    print(f"[services] ERROR: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def pid_alive(pidfile: Path) -> int | None:
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


# ---------------------------------------------------------------- Elasticsearch


def es_password() -> str:
    if not ES_PASSWORD_FILE.exists():
        STATE.mkdir(parents=True, exist_ok=True)
        password = runtime_password()
        if password:
            say(f"reusing the elastic password of the Elasticsearch data kept in {ES_RUNTIME}")
        else:
            password = secrets.token_urlsafe(18)
        ES_PASSWORD_FILE.write_text(password + "\n")
        ES_PASSWORD_FILE.chmod(0o600)
    return ES_PASSWORD_FILE.read_text().strip()


def runtime_password() -> str | None:
    """The password the data outside the checkout was set up with, where we can know it.

    Our root-only copy beside the data, else the keystore's bootstrap.password (runtimes
    set up before the copy existed). An empty copy, or one that is not a plain file, is unknown.
    """
    if ES_RUNTIME_PASSWORD is None:
        return None
    if ES_RUNTIME_PASSWORD.is_file() and not ES_RUNTIME_PASSWORD.is_symlink():
        recorded = ES_RUNTIME_PASSWORD.read_text().strip()
        if recorded:
            return recorded
    keystore = ES_HOME / "config" / "elasticsearch.keystore"
    if not keystore.exists():
        return None
    env = dict(os.environ, ES_JAVA_HOME=str(find_java_home()), ES_PATH_CONF=str(ES_HOME / "config"))
    result = subprocess.run([str(ES_HOME / "bin" / "elasticsearch-keystore"), "show", "bootstrap.password"],
                            env=env, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None


def match_runtime_password() -> None:
    """Make the data outside the checkout answer to this checkout's password.

    Data set up with another password (the checkout's password file was replaced) can no
    longer be opened by us: it is moved aside to es-data.previous-<time>, never deleted, with
    the keystore that would set the old bootstrap password again removed.
    """
    if ES_RUNTIME_PASSWORD is None:
        return
    password = es_password()
    keystore = ES_HOME / "config" / "elasticsearch.keystore"
    recorded = runtime_password()
    if recorded is not None and recorded != password:
        previous = ES_RUNTIME / f"es-data.previous-{time.strftime('%Y%m%d-%H%M%S')}"
        say(f"the Elasticsearch data in {ES_DATA} was set up with another password than the one in "
            f"{ES_PASSWORD_FILE}; moving it to {previous} and starting with empty data")
        if ES_DATA.exists():
            ES_DATA.rename(previous)
        keystore.unlink(missing_ok=True)
    # Root-only: created 0600 (never briefly world-readable), and never through a link.
    if ES_RUNTIME_PASSWORD.is_symlink():
        ES_RUNTIME_PASSWORD.unlink()
    fd = os.open(ES_RUNTIME_PASSWORD, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    os.chmod(ES_RUNTIME_PASSWORD, 0o600, follow_symlinks=False)


def find_java_home() -> Path:
    """A JDK 21 or newer: ES_JAVA_HOME if set, else the newest under /usr/lib/jvm."""
    if os.environ.get("ES_JAVA_HOME"):
        return Path(os.environ["ES_JAVA_HOME"])
    candidates = []
    for d in Path("/usr/lib/jvm").glob("*"):
        java = d / "bin" / "java"
        if not java.exists() or d.is_symlink():
            continue
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True).stderr
        try:
            version = out.split('"')[1]
            major = int(version.split(".")[0])
        except (IndexError, ValueError):
            continue
        if major >= 21:
            candidates.append((major, d))
    if not candidates:
        fail(
            "Elasticsearch 9 needs a JDK 21 or newer and none was found under /usr/lib/jvm; "
            "install one (e.g. apt-get install openjdk-21-jdk-headless where available) "
            "or set ES_JAVA_HOME."
        )
    return max(candidates)[1]


def fetch_distribution() -> Path:
    dist = STATE / "dist"
    zip_path = dist / f"elasticsearch-{ES_VERSION}.zip"
    if not zip_path.exists():
        if not shutil.which("mvn"):
            fail("Maven (mvn) is needed to fetch Elasticsearch: apt-get install maven")
        say(f"fetching {ES_ARTIFACT} with mvn dependency:copy (cached in ~/.m2)")
        subprocess.run(
            [
                "mvn", "-B", "-q",
                "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy",
                f"-Dartifact={ES_ARTIFACT}",
                f"-DoutputDirectory={dist}",
            ],
            check=True,
            cwd=STATE,
        )
    return zip_path


def ensure_es_user() -> str | None:
    """The user Elasticsearch runs as: ourselves unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(ES_USER)
    except KeyError:
        say(f"creating system user {ES_USER!r} (Elasticsearch refuses to run as root)")
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ES_USER],
            check=True,
        )
    return ES_USER


def install_es() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    ES_RUNTIME.mkdir(parents=True, exist_ok=True)
    if not (ES_HOME / "bin" / "elasticsearch").exists():
        zip_path = fetch_distribution()
        say(f"unpacking {zip_path.name} into {ES_RUNTIME}")
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(ES_RUNTIME)
        for f in (ES_HOME / "bin").iterdir():
            f.chmod(0o755)
    match_runtime_password()
    ES_DATA.mkdir(exist_ok=True)
    ES_LOGS.mkdir(exist_ok=True)
    (ES_HOME / "config" / "elasticsearch.yml").write_text(
        f"""# written by scripts/services.py
cluster.name: {ES_CLUSTER}
node.name: node-1
path.data: {ES_DATA}
path.logs: {ES_LOGS}
network.host: 127.0.0.1
http.port: {ES_PORT}
transport.port: {ES_TRANSPORT_PORT}
discovery.type: single-node
xpack.security.enabled: true
# Loopback only: basic auth without TLS (see README, "Security").
xpack.security.http.ssl.enabled: false
xpack.security.transport.ssl.enabled: false
# Development machines can have little free disk; never turn indices read-only for it.
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
"""
    )
    (ES_HOME / "config" / "jvm.options.d" / "heap.options").write_text(f"-Xms{ES_HEAP}\n-Xmx{ES_HEAP}\n")
    keystore = ES_HOME / "config" / "elasticsearch.keystore"
    env = dict(os.environ, ES_JAVA_HOME=str(find_java_home()), ES_PATH_CONF=str(ES_HOME / "config"))
    if not keystore.exists():
        # bootstrap.password sets the `elastic` user's password on a node with no security
        # index yet; written once, with the password file, on first install.
        for args, stdin in ((["create"], None), (["add", "-x", "-f", "bootstrap.password"], es_password())):
            result = subprocess.run([str(ES_HOME / "bin" / "elasticsearch-keystore"), *args], input=stdin,
                                    text=True, env=env, capture_output=True)
            if result.returncode != 0:
                fail(f"elasticsearch-keystore {args[0]} failed: {result.stdout}{result.stderr}")
    user = ensure_es_user()
    if user:
        # The runtime folder itself stays root's (the node only writes in its subfolders), so
        # the password copy in it cannot be swapped by the user the node runs as.
        if ES_RUNTIME_PASSWORD is not None:
            os.chown(ES_RUNTIME, 0, 0)
            ES_RUNTIME.chmod(0o755)
        for path in (ES_HOME, ES_DATA, ES_LOGS):
            subprocess.run(["chown", "-R", f"{user}:", str(path)], check=True)


def es_request(path: str, timeout: float = 5.0) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{ES_PORT}{path}")
    token = base64.b64encode(f"elastic:{es_password()}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


def es_health_status() -> int:
    """HTTP status of a cluster-health request waiting up to 1 s for yellow (0: no answer)."""
    return es_request("/_cluster/health?wait_for_status=yellow&timeout=1s")[0]


def es_healthy() -> bool:
    return es_health_status() == 200


def start_es() -> None:
    if pid_alive(ES_PIDFILE) and es_healthy():
        say(f"Elasticsearch already running on 127.0.0.1:{ES_PORT} (reused)")
        return
    # The test distribution has no `GET /` handler; cluster health answers on every build.
    status, body = es_request("/_cluster/health")
    if status == 401:
        fail(f"port {ES_PORT} answers but rejects this project's password: another Elasticsearch? "
             "Stop it or set ES_PORT.")
    if status == 200:
        say(f"Elasticsearch on 127.0.0.1:{ES_PORT} not started by us; reusing it")
        return
    install_es()
    java_home = find_java_home()
    say(f"starting Elasticsearch {ES_VERSION} on 127.0.0.1:{ES_PORT} (java {java_home}, heap {ES_HEAP})")
    ES_PIDFILE.unlink(missing_ok=True)
    pid_tmp = ES_LOGS / "es.pid"
    env = dict(
        os.environ,
        ES_JAVA_HOME=str(java_home),
        ES_PATH_CONF=str(ES_HOME / "config"),
        ES_TMPDIR=str(ES_TMP),
    )
    ES_TMP.mkdir(exist_ok=True)
    cmd = [str(ES_HOME / "bin" / "elasticsearch"), "-d", "-p", str(pid_tmp)]
    user = ensure_es_user()
    if user:
        subprocess.run(["chown", f"{user}:", str(ES_TMP)], check=True)
        cmd = ["runuser", "-u", user, "--", "env",
               *[f"{k}={env[k]}" for k in ("ES_JAVA_HOME", "ES_PATH_CONF", "ES_TMPDIR")], *cmd]
    log = ES_LOGS / f"{ES_CLUSTER}.log"
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-4000:], sep="\n", file=sys.stderr)
        print(tail(log), file=sys.stderr)
        fail(f"Elasticsearch failed to start (exit {result.returncode}); log: {log}")
    deadline = time.time() + float(os.environ.get("ES_START_TIMEOUT", "180"))
    rejected = 0
    while time.time() < deadline:
        if pid_tmp.exists():
            shutil.copy(pid_tmp, ES_PIDFILE)
        status = es_health_status()
        if status == 200:
            say(f"Elasticsearch is up (log: {log})")
            return
        # A node still starting answers 503 (or 401 while its security index recovers); a
        # minute of 401s means the data wants another password.
        rejected = rejected + 1 if status == 401 else 0
        if rejected >= 60:
            stop_es()
            fail(f"Elasticsearch started but rejects the password in {ES_PASSWORD_FILE}: its data in "
                 f"{ES_DATA} was set up with another one. Move that folder away (or set ES_RUNTIME_DIR) "
                 "and run again.")
        if pid_tmp.exists() and not pid_alive(ES_PIDFILE):
            break
        time.sleep(1)
    print(tail(log), file=sys.stderr)
    fail(f"Elasticsearch did not become healthy; last log lines above ({log})")


def stop_es() -> None:
    pid = pid_alive(ES_PIDFILE)
    if not pid:
        say("Elasticsearch not running")
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(60):
        if not pid_alive(ES_PIDFILE):
            break
        time.sleep(0.5)
    else:
        os.kill(pid, signal.SIGKILL)
    ES_PIDFILE.unlink(missing_ok=True)
    say("Elasticsearch stopped")


# ---------------------------------------------------------------- Redis


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0:
        fail("redis-server is missing: install Debian's redis-server package")
    say("installing Debian's redis-server")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return shutil.which("redis-server") or "/usr/bin/redis-server"


def redis_ping() -> bool:
    import socket

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
    pid = pid_alive(REDIS_PIDFILE)
    if not pid:
        say("Redis not running (or not started by us)")
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        if not pid_alive(REDIS_PIDFILE):
            break
        time.sleep(0.1)
    say("Redis stopped")


# ---------------------------------------------------------------- PostgreSQL (for the tests)


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


def install_postgres() -> None:
    if postgres_ready():
        say(f"PostgreSQL server binaries present ({Path(pg_binary('initdb')).parent})")
        return
    if os.geteuid() != 0:
        message = ("PostgreSQL's initdb and pg_ctl are missing (tests/integration/test_postgres.py starts a "
                   "throwaway server from them): install Debian's postgresql package")
        if os.environ.get("ALLOW_SKIPS", "") not in ("", "0"):
            say(f"{message}; its tests will be skipped (ALLOW_SKIPS)")
            return
        fail(f"{message}, or set ALLOW_SKIPS=1 to skip its tests")
    say("installing Debian's postgresql (server binaries for the tests)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    if not postgres_ready():
        fail("postgresql was installed but initdb, pg_ctl or the postgres user is still missing")


# ---------------------------------------------------------------- Chromium (for the browser tests)

# Where tests/browser/conftest.py looks for them (Debian's paths; PATH first).
CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMEDRIVER_NAMES = ("chromedriver",)


def chromium_binaries() -> tuple[str | None, str | None]:
    browser = next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)
    driver = next((found for name in CHROMEDRIVER_NAMES if (found := shutil.which(name))), None)
    return browser, driver


def install_chromium() -> None:
    browser, driver = chromium_binaries()
    if browser and driver:
        say(f"Chromium present ({browser}, {driver})")
        return
    if os.geteuid() != 0:
        message = ("Chromium or its driver is missing (tests/browser drives headless Chromium): "
                   "install Debian's chromium and chromium-driver packages")
        if os.environ.get("ALLOW_SKIPS", "") not in ("", "0"):
            say(f"{message}; the browser tests will be skipped (ALLOW_SKIPS)")
            return
        fail(f"{message}, or set ALLOW_SKIPS=1 to skip the browser tests")
    say("installing Debian's chromium and chromium-driver (headless browser for the tests)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium", "chromium-driver"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    browser, driver = chromium_binaries()
    if not (browser and driver):
        fail("chromium and chromium-driver were installed but chromium or chromedriver is still not on PATH")


INSTALLS = {"postgres": install_postgres, "chromium": install_chromium}


def main(argv: list[str]) -> None:
    if len(argv) < 1 or argv[0] not in {"start", "stop", "status", "password", "install"}:
        fail("usage: services.py start|stop|status|password [es|redis|all] | install postgres|chromium")
    action, which = argv[0], (argv[1] if len(argv) > 1 else "all")
    if action == "install":
        if which not in INSTALLS:
            fail("usage: services.py install postgres|chromium")
        INSTALLS[which]()
        return
    if which not in {"es", "redis", "all"}:
        fail(f"unknown service {which!r}: es, redis or all")
    if action == "password":
        print(es_password())
    elif action == "start":
        if which in ("redis", "all"):
            start_redis()
        if which in ("es", "all"):
            start_es()
    elif action == "stop":
        if which in ("es", "all"):
            stop_es()
        if which in ("redis", "all"):
            stop_redis()
    else:
        status, body = es_request("/_cluster/health")
        print(f"elasticsearch 127.0.0.1:{ES_PORT}: {'up' if status == 200 else f'down ({body[:80]})'}")
        print(f"redis 127.0.0.1:{REDIS_PORT}: {'up' if redis_ping() else 'down'}")


if __name__ == "__main__":
    main(sys.argv[1:])
