"""OpenSearch, the second engine (issue 13): OpenSearch's own test distribution with the k-NN
plugin of the same version, both from Maven Central, run single-node on 127.0.0.1. Its settings
(Engine.from_environment): OPENSEARCH_PORT (9250), OPENSEARCH_TRANSPORT_PORT (+ 100),
OPENSEARCH_HEAP (512m), OPENSEARCH_RUN_AS (opensearch), OPENSEARCH_RUNTIME_DIR,
OPENSEARCH_START_TIMEOUT (180 s), OPENSEARCH_JAVA_HOME.

Server and k-NN plugin must be of exactly the same version (the plugin's descriptor names the
server version it was built for; opensearch-plugin refuses any other). 3.5.0 is the newest
version whose k-NN plugin Maven Central serves (3.8.0.0 is not there); its test distribution has
the modules k-NN extends (lang-painless, transport-grpc) and analysis-common. OpenSearch 3 needs
Java 21 or newer. Maven Central's k-NN zip has no native libraries (faiss, nmslib): only
`method.engine: lucene` works, and the first flush of a faiss or nmslib field kills the node."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from servicekit import jvm
from servicekit.base import STATE, fail, mvn_copy, pid_alive, port_open, say

OS_VERSION = "3.5.0"
KNN_VERSION = f"{OS_VERSION}.0"
KNN_ARTIFACT = f"org.opensearch.plugin:opensearch-knn:{KNN_VERSION}:zip"
SEARCH_ENGINES = ("elasticsearch", "opensearch")


class OpenSearch(jvm.Engine):
    def installed(self) -> bool:
        """The distribution is unpacked and the k-NN plugin of the pinned version installed in it."""
        knn = self.home / "plugins" / "opensearch-knn"
        return (super().installed() and knn.is_dir()
                and plugin_descriptor(knn).get("version") == KNN_VERSION)

    def install(self) -> None:
        install_opensearch()

    def prepare(self, home: Path, java_home: Path) -> None:
        """k-NN, after the plugins it extends (a plugin loads only after those). In 3.5.0 they
        are all modules of the distribution; one that is not would be a separately released
        plugin (such as opensearch-job-scheduler), versioned like k-NN."""
        knn_zip = mvn_copy(KNN_ARTIFACT)
        knn = check_plugin_zip(knn_zip, "opensearch-knn")
        for name in filter(None, (n.strip() for n in knn.get("extended.plugins", "").split(","))):
            if (home / "modules" / name).is_dir():
                continue
            dep_zip = mvn_copy(f"org.opensearch.plugin:{name}:{KNN_VERSION}:zip")
            check_plugin_zip(dep_zip, name)
            say(f"installing {name} {KNN_VERSION} (k-NN extends it)")
            install_plugin(home, dep_zip, java_home)
        say(f"installing opensearch-knn {KNN_VERSION}")
        install_plugin(home, knn_zip, java_home)

    def check_running(self) -> None:
        check_knn_plugin()


OS = OpenSearch.from_environment(
    "OPENSEARCH", files="os", port=9250,
    # Small: it shares a 2-core / 24 GiB machine with Elasticsearch, and Lucene's HNSW graphs are
    # read through the page cache, not the heap.
    heap="512m", user="opensearch",
    name="OpenSearch", version=OS_VERSION, title_extra=f" with k-NN {KNN_VERSION}",
    artifact=f"org.opensearch.distribution.integ-test-zip:opensearch:{OS_VERSION}:zip",
    pidfile=STATE / "opensearch.pid", cluster="searchsite-os",
    settings=["# The test distribution has no security plugin: plain HTTP without authentication, which is",
              '# why the node listens on loopback only (README, "Security").'],
)
OS_PORT = OS.port
OS_HOME = OS.home


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


def install_plugin(home: Path, zip_path: Path, java_home: Path) -> None:
    java, path_conf, _ = OS.node_variables()
    env = dict(os.environ, **{java: str(java_home), path_conf: str(home / "config")})
    # --batch grants the permissions the plugin's security policy asks for (k-NN: loading its
    # native libraries, reading /proc/cpuinfo, outbound sockets for its remote index build).
    result = subprocess.run([str(home / "bin" / "opensearch-plugin"), "install", "--batch", zip_path.as_uri()],
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-4000:], sep="\n", file=sys.stderr)
        fail(f"opensearch-plugin could not install {zip_path.name} into {home} (exit {result.returncode})")


def install_opensearch() -> None:
    """Unpack the distribution and install k-NN once; write the config on every start."""
    jvm.unpack(OS)
    node = OS.node()
    jvm.write_config(OS, node, OS.heap, OS.cluster)
    jvm.own(OS, [OS_HOME, node.data, node.logs, node.tmp], OS.runtime if OS.runtime != STATE else None)


def os_request(path: str, timeout: float = 5.0) -> tuple[int, str]:
    """(HTTP status, body) of a GET on the local node; (0, error) when nothing answers."""
    return OS.request(path, timeout)


def os_healthy() -> bool:
    return OS.healthy()


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
    pid = pid_alive(OS.pidfile)
    if pid:
        # The node started from this checkout runs (perhaps still starting): a second one on
        # the same data would fail on its lock, and its pid file must not be lost. Its config
        # was written when it started, so it tells the port it listens on.
        running_port = configured_os_port()
        if running_port is not None and running_port != OS_PORT:
            fail(f"the OpenSearch node started from this checkout (pid {pid}) listens on port {running_port}, "
                 f"not OPENSEARCH_PORT={OS_PORT}; stop it with `scripts/services.py stop opensearch` first")
        deadline = time.time() + OS.start_timeout
        while time.time() < deadline and pid_alive(OS.pidfile) and not os_healthy():
            identity = os_identity()
            if identity is not None and identity[0] != "opensearch":
                break  # another server holds the port: our node is not there
            time.sleep(1)
        if os_healthy():
            check_knn_plugin()
            say(f"OpenSearch already running on 127.0.0.1:{OS_PORT} (reused)")
            return
        if pid_alive(OS.pidfile):
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
    jvm.start(OS)


def stop_opensearch() -> None:
    jvm.stop(OS, "OpenSearch not running (or not started by us)")


def search_engine() -> str:
    """SEARCH_ENGINE: which engine `start` (all) brings up besides Elasticsearch."""
    engine = os.environ.get("SEARCH_ENGINE", "elasticsearch").strip().lower() or "elasticsearch"
    if engine not in SEARCH_ENGINES:
        fail(f"SEARCH_ENGINE={os.environ['SEARCH_ENGINE']!r} is not one of {', '.join(SEARCH_ENGINES)}")
    return engine

