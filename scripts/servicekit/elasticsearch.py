"""Elasticsearch, single node: Elastic's own test distribution (`integ-test-zip`) of one pinned
version, run on 127.0.0.1 with x-pack security on. Its settings (Engine.from_environment):
ES_PORT (9200), ES_TRANSPORT_PORT (ES_PORT + 100), ES_HEAP (2g), ES_RUN_AS (elasticsearch),
ES_RUNTIME_DIR, ES_START_TIMEOUT (180 s), ES_JAVA_HOME.

The `elastic` user's password is generated once into STATE/elastic-password, which the Django
settings read. As root the node's data lives outside the checkout and outlives it, so a fresh
clone at the same path finds data whose security index holds the password of the clone before:
a root-only copy of the password beside the data lets the new clone reuse it, and data set up
with another password is moved aside (never deleted)."""
from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

from servicekit import jvm
from servicekit.base import STATE, fail, pid_alive, say, write_private

ES_VERSION = "9.1.0"  # pinned; the Python client in requirements.txt is elasticsearch 9.1.x
ES_PASSWORD_FILE = STATE / "elastic-password"
SECURITY = ["xpack.security.enabled: true",
            '# Loopback only: basic auth without TLS, on HTTP and between the nodes (README, "Security").',
            "xpack.security.http.ssl.enabled: false", "xpack.security.transport.ssl.enabled: false"]


class Elasticsearch(jvm.Engine):
    rejected = 0  # health answers of 401 in a row while the node starts

    def credentials(self) -> tuple[str, str]:
        return "elastic", es_password()

    def install(self) -> None:
        install_es()

    def starting(self, status: int) -> None:
        # A node still starting answers 503 (or 401 while its security index recovers); a
        # minute of 401s means the data wants another password.
        self.rejected = self.rejected + 1 if status == 401 else 0
        if self.rejected >= 60:
            stop_es()
            fail(f"Elasticsearch started but rejects the password in {ES_PASSWORD_FILE}: its data in "
                 f"{ES_DATA} was set up with another one. Move that folder away (or set ES_RUNTIME_DIR) "
                 "and run again.")


ES = Elasticsearch.from_environment(
    "ES", files="es", port=9200,
    # 2 GiB heap: a quarter of what a 2-core / 24 GiB machine can spare after the embedding
    # models, and HNSW graphs live off-heap in the page cache anyway.
    heap="2g", user="elasticsearch",
    name="Elasticsearch", version=ES_VERSION,
    artifact=f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{ES_VERSION}:zip",
    pidfile=STATE / "es.pid", cluster="searchsite", settings=SECURITY,
)
ES_PORT = ES.port
ES_RUNTIME, ES_HOME = ES.runtime, ES.home
ES_DATA = ES.node().data
KEYSTORE = ES_HOME / "config" / "elasticsearch.keystore"
# The root-only copy of the password beside data kept outside the checkout (None: data in it).
ES_RUNTIME_PASSWORD = ES_RUNTIME / "elastic-password" if ES_RUNTIME != STATE else None


def es_password() -> str:
    """The `elastic` user's password: STATE/elastic-password, created on first use (the one of
    data kept outside the checkout where known, else a new random one)."""
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


def keystore_env(conf: Path) -> dict[str, str]:
    java, path_conf, _ = ES.node_variables()
    return dict(os.environ, **{java: str(ES.java_home()), path_conf: str(conf)})


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
    if not KEYSTORE.exists():
        return None
    result = subprocess.run([str(ES_HOME / "bin" / "elasticsearch-keystore"), "show", "bootstrap.password"],
                            env=keystore_env(KEYSTORE.parent), capture_output=True, text=True)
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
    recorded = runtime_password()
    if recorded is not None and recorded != password:
        move_aside(ES_DATA, "Elasticsearch data")
        KEYSTORE.unlink(missing_ok=True)
    write_private(ES_RUNTIME_PASSWORD, password + "\n")


def move_aside(folder: Path, what: str) -> None:
    """Data set up with another password than ES_PASSWORD_FILE's, which we can no longer open:
    moved to <folder>.previous-<time>, never deleted, so that the node starts with empty data."""
    previous = folder.with_name(f"{folder.name}.previous-{time.strftime('%Y%m%d-%H%M%S')}")
    say(f"the {what} in {folder} was set up with another password than the one in "
        f"{ES_PASSWORD_FILE}; moving it to {previous} and starting with empty data")
    if folder.exists():
        folder.rename(previous)


def create_keystore(conf: Path, password: str) -> None:
    """conf/elasticsearch.keystore with bootstrap.password: it sets the `elastic` user's password
    on a node with no security index yet."""
    for args, stdin in ((["create"], None), (["add", "-x", "-f", "bootstrap.password"], password)):
        result = subprocess.run([str(ES_HOME / "bin" / "elasticsearch-keystore"), *args], input=stdin,
                                text=True, env=keystore_env(conf), capture_output=True)
        if result.returncode != 0:
            fail(f"elasticsearch-keystore {args[0]} failed: {result.stdout}{result.stderr}")


def install_es() -> None:
    jvm.unpack(ES)
    match_runtime_password()
    node = ES.node()
    jvm.write_config(ES, node, ES.heap, ES.cluster)
    if not KEYSTORE.exists():
        create_keystore(KEYSTORE.parent, es_password())  # once, with the password file
    jvm.own(ES, [ES_HOME, node.data, node.logs, node.tmp], ES_RUNTIME if ES_RUNTIME_PASSWORD is not None else None)


def es_request(path: str, timeout: float = 5.0, port: int = ES_PORT) -> tuple[int, str]:
    return ES.request(path, timeout, port)


def es_healthy() -> bool:
    return ES.healthy()


def start_es() -> None:
    if pid_alive(ES.pidfile) and es_healthy():
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
    jvm.start(ES)


def stop_es() -> None:
    jvm.stop(ES, "Elasticsearch not running")
