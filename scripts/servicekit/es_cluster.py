"""Elasticsearch, N nodes of one cluster on loopback (ES_NODES=N, N > 1), for drills and benchmarks.

Every node runs the single node's unpacked distribution (ES_HOME): node i answers HTTP on
ES_PORT+i-1 and transport on ES_TRANSPORT_PORT+i-1, every node master-eligible and a data node,
heap ES_HEAP (512m), security on with the password in ES_PASSWORD_FILE like the single node. Its
config, data and logs live in <runtime>/cluster-<ES_PORT>/node-<i>/, and its cluster name, data
and pid files carry ES_PORT, so a cluster on other ports never touches the single node (or
another cluster) of the same checkout."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from servicekit import jvm
from servicekit.base import fail, pid_alive, say, stop_process, tail, write_private
from servicekit.elasticsearch import (ES, ES_HOME, ES_PASSWORD_FILE, ES_PORT, ES_RUNTIME, create_keystore,
                                      es_password, es_request, move_aside)

CLUSTER_NAME = f"searchsite-cluster-{ES_PORT}"
CLUSTER_DIR = ES_RUNTIME / f"cluster-{ES_PORT}"
# The password the cluster's data was set up with (root-only, beside the data, like the single node's).
CLUSTER_PASSWORD = CLUSTER_DIR / "elastic-password"


def es_nodes() -> int:
    # 9 at most: a loopback cluster is for drills and benchmarks on one machine, where each node
    # costs a JVM; more would only starve the others.
    value = os.environ.get("ES_NODES", "1").strip() or "1"
    if not value.isdigit() or not 1 <= int(value) <= 9:
        fail(f"ES_NODES must be a number of nodes from 1 to 9, not {value!r}")
    return int(value)


def cluster_heap() -> str:
    # Several JVMs share the machine: 512m each unless ES_HEAP says otherwise (the single node's
    # 2g default is for one node alone).
    return os.environ.get("ES_HEAP", "512m")


def node_dir(i: int) -> Path:
    return CLUSTER_DIR / f"node-{i}"


def node_http_port(i: int) -> int:
    return ES_PORT + i - 1


def cluster_node(i: int) -> jvm.Node:
    """Node i's folders and ports. Its pid file is the one it writes beside its logs, removed when
    it stops: it follows the node's data, not the checkout's .services folder."""
    home = node_dir(i)
    return jvm.Node(f"node-{i}", home / "config", home / "data", home / "logs", home / "tmp",
                    node_http_port(i), ES.transport_port + i - 1, home / "logs" / "es.pid")


def node_pidfile(i: int) -> Path:
    return cluster_node(i).pidfile


def node_log(i: int) -> Path:
    return ES.log(cluster_node(i), CLUSTER_NAME)


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
    heap and keystore), data, logs and tmp, all under CLUSTER_DIR. Data set up with another
    password is moved aside (move_aside)."""
    jvm.unpack(ES)
    password = es_password()
    CLUSTER_DIR.mkdir(parents=True, exist_ok=True)
    recorded = CLUSTER_PASSWORD.read_text().strip() if CLUSTER_PASSWORD.is_file() else None
    if recorded is not None and recorded != password:
        move_aside(CLUSTER_DIR, "cluster data")
        CLUSTER_DIR.mkdir()
    write_private(CLUSTER_PASSWORD, password + "\n")
    transport = ", ".join(f"127.0.0.1:{cluster_node(i).transport_port}" for i in range(1, nodes + 1))
    discovery = (f"discovery.seed_hosts: [{transport}]",
                 "# Read only when the cluster forms the first time (empty data).",
                 f"cluster.initial_master_nodes: [{', '.join(f'node-{n}' for n in range(1, nodes + 1))}]")
    for i in range(1, nodes + 1):
        node = cluster_node(i)
        if not (node.conf / "jvm.options").exists():
            shutil.copytree(ES_HOME / "config", node.conf, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("elasticsearch.keystore", "elasticsearch.yml"))
        jvm.write_config(ES, node, cluster_heap(), CLUSTER_NAME, discovery,
                         header=f"# written by scripts/services.py (ES_NODES={nodes})")
        keystore = node.conf / "elasticsearch.keystore"
        if not keystore.exists():
            first = cluster_node(1).conf / "elasticsearch.keystore"
            if i > 1 and first.exists():
                shutil.copy(first, keystore)  # the same bootstrap password on every node
            else:
                create_keystore(node.conf, password)
    # CLUSTER_DIR itself stays root's, like the single node's runtime folder.
    jvm.own(ES, [ES_HOME, *(node_dir(i) for i in range(1, nodes + 1))], CLUSTER_DIR)


def launch_node(i: int) -> subprocess.Popen:
    """Start node i's launcher; `launched` waits for it."""
    say(f"starting node-{i} of {CLUSTER_NAME} on 127.0.0.1:{node_http_port(i)} (heap {cluster_heap()})")
    return jvm.launch(ES, cluster_node(i), ES.java_home())


def launched(i: int, launcher: subprocess.Popen) -> None:
    if launcher.wait() != 0:
        print(tail(cluster_node(i).logs / "launcher.out"), file=sys.stderr)
        print(tail(node_log(i)), file=sys.stderr)
        fail(f"node-{i} failed to start (exit {launcher.returncode}); log: {node_dir(i) / 'logs'}")


def wait_for_nodes(nodes: int, started: list[int], status: str) -> None:
    """Until the cluster has all `nodes` nodes and `status` (or better); fails with the logs of
    the nodes in `started` when one dies or time runs out."""
    deadline = time.time() + float(os.environ.get("ES_START_TIMEOUT", "240"))
    while time.time() < deadline:
        for i in started:
            if node_pidfile(i).exists() and not pid_alive(node_pidfile(i)):
                print(tail(node_log(i)), file=sys.stderr)
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
        print(tail(node_log(i), 15), file=sys.stderr)
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
    stop_process(node_pidfile(i), f"node-{i} of {CLUSTER_NAME} stopped", f"node-{i} of {CLUSTER_NAME} not running",
                 30, 0.25)


def cluster_status(nodes: int) -> None:
    code, health = cluster_health(nodes, "red", "1s")
    print(f"elasticsearch cluster {CLUSTER_NAME}: " + (f"{health.get('status')}, {health.get('number_of_nodes')} "
                                                        f"of {nodes} nodes" if code in (200, 408) else "down"))
    for i in range(1, nodes + 1):
        pid = pid_alive(node_pidfile(i))
        up = es_request("/_cluster/health", port=node_http_port(i))[0] == 200
        print(f"  node-{i} 127.0.0.1:{node_http_port(i)}: {'up' if up else 'down'}"
              + (f" (pid {pid})" if pid else ""))
