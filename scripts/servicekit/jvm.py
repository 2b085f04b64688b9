"""A JVM search engine (Elasticsearch, OpenSearch) as this project runs it, written once: the
description of one engine (`Engine`) and of one node of it (`Node`), and the steps every engine
goes through — fetch the test distribution from Maven Central, unpack it, write a node's
config, launch it as the run-as user, wait until it is healthy, stop it.

What differs between the engines (the keystore and password of Elasticsearch, the k-NN plugin of
OpenSearch) lives in their own modules, in the hooks `installed`, `install`, `prepare`,
`starting` and `check_running`."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from servicekit.base import (STATE, ensure_user, fail, find_java_home, http_get, mvn_copy, pid_alive, runtime_dir, say,
                             stop_process, tail)

# Yellow within a second: every primary shard is allocated (a single node has nowhere to put replicas).
HEALTH_PATH = "/_cluster/health?wait_for_status=yellow&timeout=1s"


@dataclass
class Node:
    """Where one node's config, data, logs and scratch files are, and the ports it listens on.
    `pidfile` is the one the node writes itself (`-p`), beside its logs."""
    name: str
    conf: Path
    data: Path
    logs: Path
    tmp: Path
    http_port: int
    transport_port: int
    pidfile: Path


@dataclass
class Engine:
    """One engine: its Maven artifact (a test distribution zip, `group:name:version:zip`), where
    it is unpacked, the single node's ports, heap, run-as user (when we are root) and files,
    and the config lines of its own (`settings`) after the ones every node gets."""
    name: str              # as messages call it
    version: str
    artifact: str
    runtime: Path          # holds the unpacked distribution and the single node's files
    files: str             # their prefix: <runtime>/<files>-data, -logs, -tmp
    port: int
    transport_port: int
    heap: str
    user: str
    env_prefix: str        # <prefix>_JAVA_HOME, <prefix>_PATH_CONF, <prefix>_TMPDIR
    pidfile: Path          # under STATE: the single node's, copied from the one it writes
    cluster: str
    start_timeout: float
    settings: list[str]
    title_extra: str = ""  # after name and version in `starting ...`

    @classmethod
    def from_environment(cls, prefix: str, files: str, port: int, heap: str, user: str, **description):
        """The engine with its single node's settings read from variables named after `prefix`:
        <prefix>_PORT (`port`), <prefix>_TRANSPORT_PORT (that + 100), <prefix>_HEAP (`heap`),
        <prefix>_RUN_AS (`user`), <prefix>_RUNTIME_DIR (runtime_dir; `files` names the folder
        under /var/lib) and <prefix>_START_TIMEOUT (180 s); <prefix>_JAVA_HOME is the JDK, when set."""
        env = os.environ.get
        port = int(env(f"{prefix}_PORT", str(port)))
        return cls(port=port, transport_port=int(env(f"{prefix}_TRANSPORT_PORT", str(port + 100))),
                   heap=env(f"{prefix}_HEAP", heap), user=env(f"{prefix}_RUN_AS", user),
                   runtime=runtime_dir(f"{prefix}_RUNTIME_DIR", files), files=files, env_prefix=prefix,
                   start_timeout=float(env(f"{prefix}_START_TIMEOUT", "180")), **description)

    @property
    def executable(self) -> str:
        """The distribution's launcher, config file and top folder are named after the artifact."""
        return self.artifact.split(":")[1]

    @property
    def home(self) -> Path:
        return self.runtime / f"{self.executable}-{self.version}"

    @property
    def title(self) -> str:
        return f"{self.name} {self.version}{self.title_extra}"

    def node(self) -> Node:
        """The single node, its files beside the distribution."""
        logs = self.runtime / f"{self.files}-logs"
        return Node("node-1", self.home / "config", self.runtime / f"{self.files}-data", logs,
                    self.runtime / f"{self.files}-tmp", self.port, self.transport_port, logs / self.pidfile.name)

    def log(self, node: Node, cluster: str | None = None) -> Path:
        return node.logs / f"{cluster or self.cluster}.log"

    def request(self, path: str, timeout: float = 5.0, port: int | None = None) -> tuple[int, str]:
        return http_get(port or self.port, path, timeout, self.credentials())

    def credentials(self) -> tuple[str, str] | None:
        return None

    def health_status(self) -> int:
        """HTTP status of a cluster-health request waiting up to 1 s for yellow (0: no answer)."""
        return self.request(HEALTH_PATH)[0]

    def healthy(self) -> bool:
        return self.health_status() == 200

    def java_home(self) -> Path:
        return find_java_home(f"{self.env_prefix}_JAVA_HOME", f"{self.name} {self.version}")

    def node_variables(self) -> tuple[str, str, str]:
        """The launcher's variables for the JDK, the node's config folder and its scratch folder."""
        return tuple(f"{self.env_prefix}_{name}" for name in ("JAVA_HOME", "PATH_CONF", "TMPDIR"))

    def node_env(self, node: Node, java_home: Path) -> dict[str, str]:
        java, conf, tmp = self.node_variables()
        return dict(os.environ, **{java: str(java_home), conf: str(node.conf), tmp: str(node.tmp)})

    # Hooks of the engines.

    def installed(self) -> bool:
        """The distribution is unpacked (and whatever `prepare` adds to it is there)."""
        return (self.home / "bin" / self.executable).exists()

    def install(self) -> None:
        """Unpack the distribution where it is not yet and write the node's config (every start)."""

    def prepare(self, home: Path, java_home: Path) -> None:
        """Complete a freshly unpacked distribution in `home` before it is moved into place."""

    def starting(self, status: int) -> None:
        """Called with each health status (not 200) while the node starts."""

    def check_running(self) -> None:
        """Called once the node is healthy; fails where it is not the node we want."""


def unpack(engine: Engine) -> None:
    """The distribution unpacked into engine.home once (every node runs it). It is unpacked
    and prepared in a staging folder renamed into place at the end, so an interrupted install
    is never mistaken for a finished one; a stale home (another plugin version) is replaced whole."""
    STATE.mkdir(parents=True, exist_ok=True)
    engine.runtime.mkdir(parents=True, exist_ok=True)
    if engine.installed():
        return
    java_home = engine.java_home()
    zip_path = mvn_copy(engine.artifact)
    staging = engine.runtime / f"{engine.home.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    say(f"unpacking {zip_path.name} into {staging}")
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(staging)
    home = staging / engine.home.name
    if not (home / "bin" / engine.executable).exists():
        fail(f"{zip_path} has no {engine.home.name}/bin/{engine.executable}; delete it to fetch it again")
    for f in (home / "bin").iterdir():
        f.chmod(0o755)
    engine.prepare(home, java_home)
    shutil.rmtree(engine.home, ignore_errors=True)
    home.rename(engine.home)
    shutil.rmtree(staging, ignore_errors=True)


def write_config(engine: Engine, node: Node, heap: str, cluster: str,
                 discovery: tuple[str, ...] = ("discovery.type: single-node",),
                 header: str = "# written by scripts/services.py") -> None:
    """The node's folders, its <engine>.yml (written on every start, so a changed port or heap
    takes effect) and its heap; `discovery`: how it finds the other nodes (none by default)."""
    for path in (node.data, node.logs, node.tmp):
        path.mkdir(exist_ok=True)
    lines = [
        header,
        f"cluster.name: {cluster}",
        f"node.name: {node.name}",
        f"path.data: {node.data}",
        f"path.logs: {node.logs}",
        "network.host: 127.0.0.1",
        f"http.port: {node.http_port}",
        f"transport.port: {node.transport_port}",
        *discovery,
        *engine.settings,
        "# Development machines can have little free disk; never turn indices read-only for it.",
        "cluster.routing.allocation.disk.threshold_enabled: false",
        "action.destructive_requires_name: false",
    ]
    (node.conf / f"{engine.executable}.yml").write_text("\n".join(lines) + "\n")
    (node.conf / "jvm.options.d" / "heap.options").write_text(f"-Xms{heap}\n-Xmx{heap}\n")


def own(engine: Engine, paths: list[Path], keep_root: Path | None) -> None:
    """As root: `paths` go to the run-as user; `keep_root` (a folder that holds a root-only
    password copy beside the data) stays root's, so the user the node runs as cannot swap it."""
    user = ensure_user(engine.user, engine.name)
    if not user:
        return
    if keep_root is not None:
        os.chown(keep_root, 0, 0)
        keep_root.chmod(0o755)
    for path in paths:
        subprocess.run(["chown", "-R", f"{user}:", str(path)], check=True)


def launch(engine: Engine, node: Node, java_home: Path) -> subprocess.Popen:
    """Start the node's launcher (`<engine> -d` returns once the node runs: wait() on it).

    Its output goes to <logs>/launcher.out: a daemonised OpenSearch node keeps the launcher's
    stdout and stderr open, so pipes would keep a reader waiting for as long as the node runs. The working
    folder is the node's own (the parent of its config): jvm.options writes heap dumps and JVM
    error files to paths relative to it."""
    node.pidfile.unlink(missing_ok=True)
    env = engine.node_env(node, java_home)
    cmd = [str(engine.home / "bin" / engine.executable), "-d", "-p", str(node.pidfile)]
    user = ensure_user(engine.user, engine.name)
    if user:
        # The node's own variables named on the command line, past whatever runuser resets.
        cmd = ["runuser", "-u", user, "--", "env", *[f"{k}={env[k]}" for k in engine.node_variables()], *cmd]
    with open(node.logs / "launcher.out", "w") as out:
        return subprocess.Popen(cmd, env=env, cwd=node.conf.parent, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)


def start(engine: Engine) -> None:
    """Install and launch the single node, and wait until it is healthy (engine.start_timeout)."""
    engine.install()
    node = engine.node()
    java_home = engine.java_home()
    say(f"starting {engine.title} on 127.0.0.1:{engine.port} (java {java_home}, heap {engine.heap})")
    engine.pidfile.unlink(missing_ok=True)
    launcher_log, log = node.logs / "launcher.out", engine.log(node)
    launcher = launch(engine, node, java_home)
    if launcher.wait() != 0:
        print(tail(launcher_log), tail(log), sep="\n", file=sys.stderr)
        fail(f"{engine.name} failed to start (exit {launcher.returncode}); logs: {launcher_log}, {log}")
    deadline = time.time() + engine.start_timeout
    while time.time() < deadline:
        if node.pidfile.exists():
            shutil.copy(node.pidfile, engine.pidfile)
        status = engine.health_status()
        if status == 200:
            engine.check_running()
            say(f"{engine.name} is up (log: {log})")
            return
        engine.starting(status)
        if node.pidfile.exists() and not pid_alive(engine.pidfile):
            break
        time.sleep(1)
    print(tail(launcher_log, 10), tail(log), sep="\n", file=sys.stderr)
    fail(f"{engine.name} did not become healthy; last log lines above ({launcher_log}, {log})")


def stop(engine: Engine, not_running: str) -> None:
    stop_process(engine.pidfile, f"{engine.name} stopped", not_running, 30, 0.5)
