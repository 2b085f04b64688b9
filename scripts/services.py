#!/usr/bin/env python3
"""Provision and run the project's local Elasticsearch, OpenSearch and Redis on loopback.

    python scripts/services.py start [es|opensearch|redis|all]
    python scripts/services.py stop  [es|opensearch|redis|all]
    python scripts/services.py status
    python scripts/services.py install postgres
    python scripts/services.py install chromium
    ES_NODES=3 python scripts/services.py start|stop es        an N-node cluster instead
    ES_NODES=3 python scripts/services.py start|stop es-node 2 one node of it (drills)

Elasticsearch is Elastic's own test distribution (`integ-test-zip`) of one pinned
version, fetched from Maven Central with `mvn dependency:copy` (cached in ~/.m2, so a
second run downloads nothing), unpacked under `.services/`, and run single-node on
127.0.0.1 with x-pack security on: the `elastic` user's password is generated once into
`.services/elastic-password`, which the Django settings read.  Elasticsearch refuses to
run as root, so when we are root it runs as the unprivileged system user `elasticsearch`.

ES_NODES=N (N > 1) runs N nodes of one cluster instead, from the same unpacked distribution:
HTTP ports ES_PORT..ES_PORT+N-1, each with its own config, data and logs under
<runtime>/cluster-<ES_PORT>/, heap ES_HEAP (512m), security as on the single node (see the
"Elasticsearch cluster" section below).

OpenSearch (the second engine, issue 13) is OpenSearch's own test distribution
(`org.opensearch.distribution.integ-test-zip:opensearch`) with the k-NN plugin of the same
version (`org.opensearch.plugin:opensearch-knn`), both from Maven Central the same way, run
single-node on 127.0.0.1:$OPENSEARCH_PORT (9250). Maven Central's k-NN zip has no native
libraries (faiss, nmslib): only `method.engine: lucene` works, and the first flush of a faiss or
nmslib field kills the node (see start_opensearch). `start`/`start all` starts it only when
SEARCH_ENGINE=opensearch; `start opensearch` always does.

Redis is Debian's `redis-server` (installed with apt-get when missing).

`install postgres` only makes sure PostgreSQL's server binaries (`initdb`, `pg_ctl`) are there,
installing Debian's `postgresql` with apt-get when missing (as root): the integration tests start
a throwaway server of their own from them (tests/integration/test_postgres.py). Nothing is started.

`install chromium` makes sure Debian's `chromium` and `chromium-driver` are there (apt-get, as
root, when missing): the browser tests (tests/integration/test_browser.py) drive headless Chromium through Selenium
with Debian's chromedriver, which matches the browser's version.

Only the standard library is used: this runs before the virtualenv exists.
"""
from __future__ import annotations

import base64
import hashlib
import json
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
_checkout_id = hashlib.sha1(str(ROOT).encode()).hexdigest()[:10]
if os.geteuid() == 0:
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

# OpenSearch: server and k-NN plugin must be of exactly the same version (the plugin's
# descriptor names the server version it was built for; opensearch-plugin refuses any other).
# 3.5.0 is the newest version whose k-NN plugin Maven Central serves (3.8.0.0 is not there);
# its test distribution has the modules k-NN extends (lang-painless, transport-grpc) and
# analysis-common. OpenSearch 3 needs Java 21 or newer.
OS_VERSION = "3.5.0"
KNN_VERSION = f"{OS_VERSION}.0"
OS_ARTIFACT = f"org.opensearch.distribution.integ-test-zip:opensearch:{OS_VERSION}:zip"
KNN_ARTIFACT = f"org.opensearch.plugin:opensearch-knn:{KNN_VERSION}:zip"
OS_PORT = int(os.environ.get("OPENSEARCH_PORT", "9250"))
OS_TRANSPORT_PORT = int(os.environ.get("OPENSEARCH_TRANSPORT_PORT", str(OS_PORT + 100)))
# Small: it shares a 2-core / 24 GiB machine with Elasticsearch, and Lucene's HNSW graphs are
# read through the page cache, not the heap.
OS_HEAP = os.environ.get("OPENSEARCH_HEAP", "512m")
OS_USER = os.environ.get("OPENSEARCH_RUN_AS", "opensearch")
# As for Elasticsearch: as root the node runs as an unprivileged user that may not be able to
# enter the checkout, so its files live under /var/lib, one folder per checkout.
if os.geteuid() == 0:
    OS_RUNTIME = Path(os.environ.get("OPENSEARCH_RUNTIME_DIR", f"/var/lib/searchsite/os-{_checkout_id}"))
else:
    OS_RUNTIME = Path(os.environ.get("OPENSEARCH_RUNTIME_DIR", STATE))
OS_HOME = OS_RUNTIME / f"opensearch-{OS_VERSION}"
OS_DATA = OS_RUNTIME / "os-data"
OS_LOGS = OS_RUNTIME / "os-logs"
OS_TMP = OS_RUNTIME / "os-tmp"
OS_PIDFILE = STATE / "opensearch.pid"
OS_CLUSTER = "searchsite-os"
SEARCH_ENGINES = ("elasticsearch", "opensearch")

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


def find_java_home(override: str = "ES_JAVA_HOME", what: str = "Elasticsearch 9") -> Path:
    """A JDK 21 or newer: $override (ES_JAVA_HOME) if set, else the newest under /usr/lib/jvm."""
    if os.environ.get(override):
        return Path(os.environ[override])
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
            f"{what} needs a JDK 21 or newer and none was found under /usr/lib/jvm; "
            "install one (e.g. apt-get install openjdk-21-jdk-headless where available) "
            f"or set {override}."
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
    return ensure_user(ES_USER, "Elasticsearch")


def ensure_user(name: str, what: str) -> str | None:
    """The user `what` runs as: ourselves unless we are root, else the system user `name`."""
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


def unpack_es() -> None:
    """The distribution unpacked into ES_HOME once (the single node and every cluster node run it)."""
    STATE.mkdir(parents=True, exist_ok=True)
    ES_RUNTIME.mkdir(parents=True, exist_ok=True)
    if not (ES_HOME / "bin" / "elasticsearch").exists():
        zip_path = fetch_distribution()
        say(f"unpacking {zip_path.name} into {ES_RUNTIME}")
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(ES_RUNTIME)
        for f in (ES_HOME / "bin").iterdir():
            f.chmod(0o755)


def install_es() -> None:
    unpack_es()
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


def es_request(path: str, timeout: float = 5.0, port: int = ES_PORT) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
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


# ---------------------------------------------------------------- Elasticsearch cluster (ES_NODES > 1)
#
# ES_NODES=N starts N nodes on loopback from the same unpacked distribution (ES_HOME): node i
# answers HTTP on ES_PORT+i-1 and transport on ES_TRANSPORT_PORT+i-1, every node master-eligible
# and a data node, security on with the password in ES_PASSWORD_FILE like the single node. Its
# cluster name, data and pid files carry ES_PORT, so a cluster on other ports never touches the
# single node (or another cluster) of the same checkout.


def es_nodes() -> int:
    # 9 at most: a loopback cluster is for drills and benchmarks on one machine, where each node
    # costs a JVM; more would only starve the others.
    value = os.environ.get("ES_NODES", "1").strip() or "1"
    if not value.isdigit() or not 1 <= int(value) <= 9:
        fail(f"ES_NODES must be a number of nodes from 1 to 9, not {value!r}")
    return int(value)


CLUSTER_NAME = f"searchsite-cluster-{ES_PORT}"
CLUSTER_DIR = ES_RUNTIME / f"cluster-{ES_PORT}"
# The password the cluster's data was set up with (root-only, beside the data, like the single node's).
CLUSTER_PASSWORD = CLUSTER_DIR / "elastic-password"


def cluster_heap() -> str:
    # Several JVMs share the machine: 512m each unless ES_HEAP says otherwise (the single node's
    # 2g default is for one node alone).
    return os.environ.get("ES_HEAP", "512m")


def node_dir(i: int) -> Path:
    return CLUSTER_DIR / f"node-{i}"


def node_http_port(i: int) -> int:
    return ES_PORT + i - 1


def node_pidfile(i: int) -> Path:
    """Written by the node itself (`-p`) beside its logs, and removed when it stops: it follows the
    node's data, not the checkout's .services folder."""
    return node_dir(i) / "logs" / "es.pid"


def check_node_number(i: str, nodes: int) -> int:
    if not i.isdigit() or not 1 <= int(i) <= nodes:
        fail(f"node number must be 1..{nodes} (ES_NODES={nodes}), not {i!r}")
    return int(i)


def cluster_health(nodes: int, status: str = "yellow", timeout: str = "1s") -> tuple[int, dict]:
    """Health asked of the first node that answers: (HTTP status, body); 200 means `status` or
    better with all `nodes` nodes in the cluster."""
    for i in range(1, nodes + 1):
        code, body = es_request(f"/_cluster/health?wait_for_status={status}&wait_for_nodes={nodes}"
                                f"&timeout={timeout}", port=node_http_port(i))
        if code == 0:
            continue
        try:
            return code, json.loads(body)
        except ValueError:
            return code, {"error": body[:200]}
    return 0, {}


def install_cluster(nodes: int) -> None:
    """Per node: a config folder (a copy of the distribution's, with its own elasticsearch.yml,
    heap and keystore), data, logs and tmp, all under CLUSTER_DIR."""
    unpack_es()
    password = es_password()
    CLUSTER_DIR.mkdir(parents=True, exist_ok=True)
    recorded = CLUSTER_PASSWORD.read_text().strip() if CLUSTER_PASSWORD.is_file() else None
    if recorded is not None and recorded != password:
        previous = ES_RUNTIME / f"cluster-{ES_PORT}.previous-{time.strftime('%Y%m%d-%H%M%S')}"
        say(f"the cluster data in {CLUSTER_DIR} was set up with another password than the one in "
            f"{ES_PASSWORD_FILE}; moving it to {previous} and starting with empty data")
        CLUSTER_DIR.rename(previous)
        CLUSTER_DIR.mkdir()
    if CLUSTER_PASSWORD.is_symlink():
        CLUSTER_PASSWORD.unlink()
    fd = os.open(CLUSTER_PASSWORD, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    transport = [f"127.0.0.1:{ES_TRANSPORT_PORT + i - 1}" for i in range(1, nodes + 1)]
    java_env = dict(os.environ, ES_JAVA_HOME=str(find_java_home()))
    for i in range(1, nodes + 1):
        home = node_dir(i)
        config = home / "config"
        if not (config / "jvm.options").exists():
            shutil.copytree(ES_HOME / "config", config, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("elasticsearch.keystore", "elasticsearch.yml"))
        for sub in ("data", "logs", "tmp"):
            (home / sub).mkdir(exist_ok=True)
        (config / "elasticsearch.yml").write_text(
            f"""# written by scripts/services.py (ES_NODES={nodes})
cluster.name: {CLUSTER_NAME}
node.name: node-{i}
path.data: {home / "data"}
path.logs: {home / "logs"}
network.host: 127.0.0.1
http.port: {node_http_port(i)}
transport.port: {ES_TRANSPORT_PORT + i - 1}
discovery.seed_hosts: [{", ".join(transport)}]
# Read only when the cluster forms the first time (empty data).
cluster.initial_master_nodes: [{", ".join(f"node-{n}" for n in range(1, nodes + 1))}]
xpack.security.enabled: true
# Loopback only: basic auth without TLS, on HTTP and between the nodes (README, "Security").
xpack.security.http.ssl.enabled: false
xpack.security.transport.ssl.enabled: false
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
"""
        )
        (config / "jvm.options.d" / "heap.options").write_text(f"-Xms{cluster_heap()}\n-Xmx{cluster_heap()}\n")
        keystore = config / "elasticsearch.keystore"
        if not keystore.exists():
            first = node_dir(1) / "config" / "elasticsearch.keystore"
            if i > 1 and first.exists():
                shutil.copy(first, keystore)  # the same bootstrap password on every node
                continue
            env = dict(java_env, ES_PATH_CONF=str(config))
            for args, stdin in ((["create"], None), (["add", "-x", "-f", "bootstrap.password"], password)):
                result = subprocess.run([str(ES_HOME / "bin" / "elasticsearch-keystore"), *args], input=stdin,
                                        text=True, env=env, capture_output=True)
                if result.returncode != 0:
                    fail(f"elasticsearch-keystore {args[0]} failed: {result.stdout}{result.stderr}")
    user = ensure_es_user()
    if user:
        # CLUSTER_DIR itself stays root's, like ES_RUNTIME: the password copy in it cannot be swapped.
        os.chown(CLUSTER_DIR, 0, 0)
        CLUSTER_DIR.chmod(0o755)
        for path in [ES_HOME, *(node_dir(i) for i in range(1, nodes + 1))]:
            subprocess.run(["chown", "-R", f"{user}:", str(path)], check=True)


def launch_node(i: int) -> subprocess.Popen:
    """Start node i's launcher (`elasticsearch -d` returns once the node runs); `launched` waits for it."""
    home = node_dir(i)
    node_pidfile(i).unlink(missing_ok=True)
    env = dict(os.environ, ES_JAVA_HOME=str(find_java_home()), ES_PATH_CONF=str(home / "config"),
               ES_TMPDIR=str(home / "tmp"))
    cmd = [str(ES_HOME / "bin" / "elasticsearch"), "-d", "-p", str(node_pidfile(i))]
    user = ensure_es_user()
    if user:
        cmd = ["runuser", "-u", user, "--", "env",
               *[f"{k}={env[k]}" for k in ("ES_JAVA_HOME", "ES_PATH_CONF", "ES_TMPDIR")], *cmd]
    say(f"starting node-{i} of {CLUSTER_NAME} on 127.0.0.1:{node_http_port(i)} (heap {cluster_heap()})")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def launched(i: int, launcher: subprocess.Popen) -> None:
    output, _ = launcher.communicate()
    if launcher.returncode != 0:
        print(output[-4000:], file=sys.stderr)
        print(tail(node_dir(i) / "logs" / f"{CLUSTER_NAME}.log"), file=sys.stderr)
        fail(f"node-{i} failed to start (exit {launcher.returncode}); log: {node_dir(i) / 'logs'}")


def wait_for_nodes(nodes: int, started: list[int], status: str) -> None:
    """Until the cluster has all `nodes` nodes and `status` (or better); fails with the logs of
    the nodes in `started` when one dies or time runs out."""
    deadline = time.time() + float(os.environ.get("ES_START_TIMEOUT", "240"))
    while time.time() < deadline:
        for i in started:
            if node_pidfile(i).exists() and not pid_alive(node_pidfile(i)):
                print(tail(node_dir(i) / "logs" / f"{CLUSTER_NAME}.log"), file=sys.stderr)
                fail(f"node-{i} exited while starting; last log lines above")
        code, health = cluster_health(nodes, status)
        if code == 200:
            say(f"{CLUSTER_NAME}: {health['number_of_nodes']} nodes, {health['status']} "
                f"(HTTP 127.0.0.1:{node_http_port(1)}..{node_http_port(nodes)})")
            return
        if code == 401:
            fail(f"{CLUSTER_NAME} rejects the password in {ES_PASSWORD_FILE}; move {CLUSTER_DIR} away and start again")
        time.sleep(1)
    for i in started:
        print(tail(node_dir(i) / "logs" / f"{CLUSTER_NAME}.log", 15), file=sys.stderr)
    fail(f"{CLUSTER_NAME} did not reach {status} with {nodes} nodes; last log lines above")


def start_cluster(nodes: int) -> None:
    if cluster_health(nodes, "green")[0] == 200 and all(pid_alive(node_pidfile(i)) for i in range(1, nodes + 1)):
        say(f"{CLUSTER_NAME} already running with {nodes} nodes (reused)")
        return
    for i in range(1, nodes + 1):
        if not pid_alive(node_pidfile(i)):
            code, body = es_request("/_cluster/health", port=node_http_port(i))
            if code != 0:
                fail(f"port {node_http_port(i)} (node-{i}) is answered by a server not started by us "
                     f"(HTTP {code}): stop it or choose another ES_PORT")
    install_cluster(nodes)
    started = [i for i in range(1, nodes + 1) if not pid_alive(node_pidfile(i))]
    # All at once: each waits for the others to form the cluster.
    for i, launcher in [(i, launch_node(i)) for i in started]:
        launched(i, launcher)
    wait_for_nodes(nodes, started, "green")


def start_node(nodes: int, i: int) -> None:
    """Start one node of a running cluster again (drills); waits until it has joined."""
    install_cluster(nodes)
    if not pid_alive(node_pidfile(i)):
        launched(i, launch_node(i))
    wait_for_nodes(nodes, [i], "yellow")


def stop_node(i: int) -> None:
    pidfile = node_pidfile(i)
    pid = pid_alive(pidfile)
    if not pid:
        say(f"node-{i} of {CLUSTER_NAME} not running")
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(120):
        if not pid_alive(pidfile):
            break
        time.sleep(0.25)
    else:
        os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    say(f"node-{i} of {CLUSTER_NAME} stopped")


def cluster_status(nodes: int) -> None:
    code, health = cluster_health(nodes, "red", "1s")
    print(f"elasticsearch cluster {CLUSTER_NAME}: " + (f"{health.get('status')}, {health.get('number_of_nodes')} "
                                                        f"of {nodes} nodes" if code in (200, 408) else "down"))
    for i in range(1, nodes + 1):
        pid = pid_alive(node_pidfile(i))
        up = es_request("/_cluster/health", port=node_http_port(i))[0] == 200
        print(f"  node-{i} 127.0.0.1:{node_http_port(i)}: {'up' if up else 'down'}"
              + (f" (pid {pid})" if pid else ""))


# ---------------------------------------------------------------- OpenSearch


def mvn_copy(artifact: str, filename: str) -> Path:
    """`artifact` (group:name:version:zip) from Maven Central into .services/dist/`filename`.

    Cached twice: the copy in dist/ and mvn's own ~/.m2, so a second run downloads nothing.
    A failed fetch names the artifact (the version is what usually does not resolve)."""
    dist = STATE / "dist"
    path = dist / filename
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


def plugin_descriptor(path: Path) -> dict[str, str]:
    """The key=value lines of an OpenSearch plugin's plugin-descriptor.properties (a zip, or
    an installed plugin's folder)."""
    if path.is_dir():
        text = (path / "plugin-descriptor.properties").read_text()
    else:
        try:
            with zipfile.ZipFile(path) as zf:
                text = zf.read("plugin-descriptor.properties").decode()
        except (zipfile.BadZipFile, KeyError) as e:
            fail(f"{path} is not an OpenSearch plugin zip ({e}); delete it to fetch it again")
    pairs = (line.split("=", 1) for line in text.splitlines()
             if "=" in line and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def check_plugin_zip(path: Path, name: str) -> dict[str, str]:
    """The descriptor of plugin zip `path`, refused unless it is `name` built for OS_VERSION:
    opensearch-plugin would refuse it too, but later and less clearly."""
    descriptor = plugin_descriptor(path)
    if descriptor.get("name") != name or descriptor.get("opensearch.version") != OS_VERSION:
        fail(f"{path} is plugin {descriptor.get('name')!r} for OpenSearch "
             f"{descriptor.get('opensearch.version')!r}, not {name!r} for {OS_VERSION}")
    return descriptor


def opensearch_installed() -> bool:
    """The distribution is unpacked and the k-NN plugin of the pinned version installed in it."""
    knn = OS_HOME / "plugins" / "opensearch-knn"
    return ((OS_HOME / "bin" / "opensearch").exists() and knn.is_dir()
            and plugin_descriptor(knn).get("version") == KNN_VERSION)


def opensearch_env(java_home: Path) -> dict[str, str]:
    return dict(os.environ, OPENSEARCH_JAVA_HOME=str(java_home), OPENSEARCH_PATH_CONF=str(OS_HOME / "config"),
                OPENSEARCH_TMPDIR=str(OS_TMP))


def install_opensearch_plugin(home: Path, zip_path: Path, java_home: Path) -> None:
    env = dict(os.environ, OPENSEARCH_JAVA_HOME=str(java_home), OPENSEARCH_PATH_CONF=str(home / "config"))
    # --batch grants the permissions the plugin's security policy asks for (k-NN: loading its
    # native libraries, reading /proc/cpuinfo, outbound sockets for its remote index build).
    result = subprocess.run([str(home / "bin" / "opensearch-plugin"), "install", "--batch", zip_path.as_uri()],
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-4000:], sep="\n", file=sys.stderr)
        fail(f"opensearch-plugin could not install {zip_path.name} into {home} (exit {result.returncode})")


def install_opensearch() -> None:
    """Unpack the distribution and install k-NN (and what it extends) once; write the config
    on every start. The install happens in a staging folder renamed into place at the end, so
    an interrupted one is never mistaken for a finished one."""
    STATE.mkdir(parents=True, exist_ok=True)
    OS_RUNTIME.mkdir(parents=True, exist_ok=True)
    java_home = find_java_home("OPENSEARCH_JAVA_HOME", f"OpenSearch {OS_VERSION}")
    if not opensearch_installed():
        dist_zip = mvn_copy(OS_ARTIFACT, f"opensearch-{OS_VERSION}.zip")
        knn_zip = mvn_copy(KNN_ARTIFACT, f"opensearch-knn-{KNN_VERSION}.zip")
        knn = check_plugin_zip(knn_zip, "opensearch-knn")
        staging = OS_RUNTIME / f"opensearch-{OS_VERSION}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        say(f"unpacking {dist_zip.name} into {staging}")
        with zipfile.ZipFile(dist_zip) as zf:
            zf.extractall(staging)
        home = staging / f"opensearch-{OS_VERSION}"
        if not (home / "bin" / "opensearch").exists():
            fail(f"{dist_zip} has no opensearch-{OS_VERSION}/bin/opensearch; delete it to fetch it again")
        for f in (home / "bin").iterdir():
            f.chmod(0o755)
        # A plugin loads only after the plugins it extends. In 3.5.0 they are all modules of
        # the distribution; one that is not would be a separately released plugin (such as
        # opensearch-job-scheduler), versioned like k-NN.
        for name in filter(None, (n.strip() for n in knn.get("extended.plugins", "").split(","))):
            if (home / "modules" / name).is_dir():
                continue
            dep_zip = mvn_copy(f"org.opensearch.plugin:{name}:{KNN_VERSION}:zip", f"{name}-{KNN_VERSION}.zip")
            check_plugin_zip(dep_zip, name)
            say(f"installing {name} {KNN_VERSION} (k-NN extends it)")
            install_opensearch_plugin(home, dep_zip, java_home)
        say(f"installing opensearch-knn {KNN_VERSION}")
        install_opensearch_plugin(home, knn_zip, java_home)
        # Only what we unpacked lives in OS_HOME (data and logs are beside it): a stale one
        # (another k-NN version) is replaced whole.
        shutil.rmtree(OS_HOME, ignore_errors=True)
        home.rename(OS_HOME)
        shutil.rmtree(staging, ignore_errors=True)
    for path in (OS_DATA, OS_LOGS, OS_TMP):
        path.mkdir(exist_ok=True)
    (OS_HOME / "config" / "opensearch.yml").write_text(
        f"""# written by scripts/services.py
cluster.name: {OS_CLUSTER}
node.name: node-1
path.data: {OS_DATA}
path.logs: {OS_LOGS}
network.host: 127.0.0.1
http.port: {OS_PORT}
transport.port: {OS_TRANSPORT_PORT}
discovery.type: single-node
# The test distribution has no security plugin: plain HTTP without authentication, which is
# why the node listens on loopback only (README, "Security").
# Development machines can have little free disk; never turn indices read-only for it.
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
"""
    )
    (OS_HOME / "config" / "jvm.options.d" / "heap.options").write_text(f"-Xms{OS_HEAP}\n-Xmx{OS_HEAP}\n")
    user = ensure_user(OS_USER, "OpenSearch")
    if user:
        if OS_RUNTIME != STATE:
            os.chown(OS_RUNTIME, 0, 0)
            OS_RUNTIME.chmod(0o755)
        for path in (OS_HOME, OS_DATA, OS_LOGS, OS_TMP):
            subprocess.run(["chown", "-R", f"{user}:", str(path)], check=True)


def os_request(path: str, timeout: float = 5.0) -> tuple[int, str]:
    """(HTTP status, body) of a GET on the local node; (0, error) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{OS_PORT}{path}", timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


def os_healthy() -> bool:
    return os_request("/_cluster/health?wait_for_status=yellow&timeout=1s")[0] == 200


def port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def os_identity() -> tuple[str, str] | None:
    """(distribution, version number) from `GET /` of whatever listens on OS_PORT, the same
    fields /healthz reads (`info()["version"]`); None when nothing listens. Elasticsearch
    leaves out `distribution`; what is no search engine is described in the first item."""
    status, body = os_request("/")
    if status == 0:
        return (f"a server that does not answer HTTP ({body})", "?") if port_open(OS_PORT) else None
    if status == 401:
        return ("a server that asks for credentials (Elasticsearch, or OpenSearch with its security "
                "plugin)", "?")
    try:
        version = json.loads(body)["version"]
        return version.get("distribution", "elasticsearch"), version["number"]
    except (ValueError, KeyError, TypeError):
        return f"a server that is no search engine (HTTP {status}: {body[:120]!r})", "?"


def configured_os_port() -> int | None:
    """http.port in the config of the installed node, None if there is none."""
    try:
        lines = (OS_HOME / "config" / "opensearch.yml").read_text().splitlines()
    except FileNotFoundError:
        return None
    ports = [line.split(":", 1)[1].strip() for line in lines if line.startswith("http.port:")]
    return int(ports[0]) if ports and ports[0].isdigit() else None


def check_knn_plugin() -> None:
    """The node must run the k-NN plugin of our version: without it `knn_vector` is unknown."""
    status, body = os_request("/_cat/plugins?format=json")
    if status != 200:
        fail(f"OpenSearch on 127.0.0.1:{OS_PORT} did not list its plugins (HTTP {status}: {body[:200]})")
    versions = {p["component"]: p["version"] for p in json.loads(body)}
    if versions.get("opensearch-knn") != KNN_VERSION:
        fail(f"OpenSearch on 127.0.0.1:{OS_PORT} runs k-NN {versions.get('opensearch-knn')!r}, not {KNN_VERSION}: "
             "stop it or set OPENSEARCH_PORT")


def start_opensearch() -> None:
    timeout = float(os.environ.get("OPENSEARCH_START_TIMEOUT", "180"))
    pid = pid_alive(OS_PIDFILE)
    if pid:
        # The node started from this checkout runs (perhaps still starting): a second one on
        # the same data would fail on its lock, and its pid file must not be lost. Its config
        # was written when it started, so it tells the port it listens on.
        running_port = configured_os_port()
        if running_port is not None and running_port != OS_PORT:
            fail(f"the OpenSearch node started from this checkout (pid {pid}) listens on port {running_port}, "
                 f"not OPENSEARCH_PORT={OS_PORT}; stop it with `scripts/services.py stop opensearch` first")
        deadline = time.time() + timeout
        while time.time() < deadline and pid_alive(OS_PIDFILE) and not os_healthy():
            identity = os_identity()
            if identity is not None and identity[0] != "opensearch":
                break  # another server holds the port: our node is not there
            time.sleep(1)
        if os_healthy():
            check_knn_plugin()
            say(f"OpenSearch already running on 127.0.0.1:{OS_PORT} (reused)")
            return
        if pid_alive(OS_PIDFILE):
            fail(f"the OpenSearch node started from this checkout (pid {pid}) does not answer on "
                 f"127.0.0.1:{OS_PORT} (started with another OPENSEARCH_PORT?); stop it with "
                 "`scripts/services.py stop opensearch` and start again")
    identity = os_identity()
    if identity is not None:
        if identity[0] != "opensearch":
            fail(f"port {OS_PORT} is in use by {identity[0]}"
                 + (f" {identity[1]}" if identity[1] != "?" else "")
                 + ", not OpenSearch: stop it or set OPENSEARCH_PORT")
        if identity[1] != OS_VERSION:
            fail(f"port {OS_PORT} is answered by OpenSearch {identity[1]}, not {OS_VERSION}: stop it or set "
                 "OPENSEARCH_PORT")
        check_knn_plugin()
        say(f"OpenSearch {identity[1]} on 127.0.0.1:{OS_PORT} not started by us; reusing it")
        return
    install_opensearch()
    java_home = find_java_home("OPENSEARCH_JAVA_HOME", f"OpenSearch {OS_VERSION}")
    say(f"starting OpenSearch {OS_VERSION} with k-NN {KNN_VERSION} on 127.0.0.1:{OS_PORT} "
        f"(java {java_home}, heap {OS_HEAP})")
    OS_PIDFILE.unlink(missing_ok=True)
    pid_tmp = OS_LOGS / "opensearch.pid"
    pid_tmp.unlink(missing_ok=True)
    env = opensearch_env(java_home)
    cmd = [str(OS_HOME / "bin" / "opensearch"), "-d", "-p", str(pid_tmp)]
    user = ensure_user(OS_USER, "OpenSearch")
    if user:
        cmd = ["runuser", "-u", user, "--", "env",
               *[f"{k}={env[k]}" for k in ("OPENSEARCH_JAVA_HOME", "OPENSEARCH_PATH_CONF", "OPENSEARCH_TMPDIR")],
               *cmd]
    log = OS_LOGS / f"{OS_CLUSTER}.log"
    # The daemonised node keeps the launcher's stdout and stderr open, so they go to a file:
    # pipes would keep this call waiting for as long as the node runs.
    launcher_log = OS_LOGS / "launcher.out"
    with open(launcher_log, "w") as out:
        # cwd: jvm.options writes heap dumps and JVM error files to paths relative to it.
        result = subprocess.run(cmd, env=env, cwd=OS_HOME, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    if result.returncode != 0:
        print(tail(launcher_log), tail(log), sep="\n", file=sys.stderr)
        fail(f"OpenSearch failed to start (exit {result.returncode}); logs: {launcher_log}, {log}")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pid_tmp.exists():
            shutil.copy(pid_tmp, OS_PIDFILE)
        if os_healthy():
            check_knn_plugin()
            say(f"OpenSearch is up (log: {log})")
            return
        if pid_tmp.exists() and not pid_alive(OS_PIDFILE):
            break
        time.sleep(1)
    print(tail(launcher_log, 10), tail(log), sep="\n", file=sys.stderr)
    fail(f"OpenSearch did not become healthy; last log lines above ({launcher_log}, {log})")


def stop_opensearch() -> None:
    pid = pid_alive(OS_PIDFILE)
    if not pid:
        say("OpenSearch not running (or not started by us)")
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(60):
        if not pid_alive(OS_PIDFILE):
            break
        time.sleep(0.5)
    else:
        os.kill(pid, signal.SIGKILL)
    OS_PIDFILE.unlink(missing_ok=True)
    say("OpenSearch stopped")


def search_engine() -> str:
    """SEARCH_ENGINE: which engine `start` (all) brings up besides Elasticsearch."""
    engine = os.environ.get("SEARCH_ENGINE", "elasticsearch").strip().lower() or "elasticsearch"
    if engine not in SEARCH_ENGINES:
        fail(f"SEARCH_ENGINE={os.environ['SEARCH_ENGINE']!r} is not one of {', '.join(SEARCH_ENGINES)}")
    return engine


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

# Where tests/support/browser.py looks for them too (on PATH, where Debian puts them).
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
        message = ("Chromium or its driver is missing (tests/integration/test_browser.py drives headless Chromium): "
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
    usage = ("usage: services.py start|stop|status|password [es|opensearch|redis|all] | start|stop es-node N "
             "| install postgres|chromium")
    if len(argv) < 1 or argv[0] not in {"start", "stop", "status", "password", "install"}:
        fail(usage)
    action, which = argv[0], (argv[1] if len(argv) > 1 else "all")
    nodes = es_nodes()
    if which == "es-node":
        if action not in ("start", "stop") or len(argv) != 3 or nodes < 2:
            fail("usage: ES_NODES=N services.py start|stop es-node I  (one node of an N-node cluster, N > 1)")
        i = check_node_number(argv[2], nodes)
        start_node(nodes, i) if action == "start" else stop_node(i)
        return
    if action == "install":
        if which not in INSTALLS:
            fail("usage: services.py install postgres|chromium")
        INSTALLS[which]()
        return
    if which not in {"es", "opensearch", "redis", "all"}:
        fail(f"unknown service {which!r}: es, opensearch, redis or all")
    # A bad SEARCH_ENGINE is refused before anything starts.
    engine = search_engine() if action == "start" and which == "all" else None
    if action == "password":
        print(es_password())
    elif action == "start":
        if which in ("redis", "all"):
            start_redis()
        # Elasticsearch stays part of `all` whatever SEARCH_ENGINE says: `make test` runs the
        # whole suite on it. OpenSearch joins `all` only when chosen, so `make run` pays nothing
        # for it otherwise (`make test` starts it by name for its backend suite).
        if which in ("es", "all"):
            start_cluster(nodes) if nodes > 1 else start_es()
        if which == "opensearch" or engine == "opensearch":
            start_opensearch()
    elif action == "stop":
        if which in ("es", "all"):
            if nodes > 1:
                for i in range(1, nodes + 1):
                    stop_node(i)
            else:
                stop_es()
        # `stop` (all) stops a node we started whatever SEARCH_ENGINE says now.
        if which in ("opensearch", "all"):
            stop_opensearch()
        if which in ("redis", "all"):
            stop_redis()
    else:
        if nodes > 1:
            cluster_status(nodes)
        else:
            status, body = es_request("/_cluster/health")
            print(f"elasticsearch 127.0.0.1:{ES_PORT}: {'up' if status == 200 else f'down ({body[:80]})'}")
        identity = os_identity()
        print(f"opensearch 127.0.0.1:{OS_PORT}: "
              + (f"up ({identity[0]} {identity[1]})" if identity and os_healthy() else
                 f"answers but not healthy ({identity[0]} {identity[1]})" if identity else "down"))
        print(f"redis 127.0.0.1:{REDIS_PORT}: {'up' if redis_ping() else 'down'}")


if __name__ == "__main__":
    main(sys.argv[1:])
