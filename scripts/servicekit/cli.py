"""The command line of scripts/services.py: which services each subcommand starts, stops or
reports on (the usage is in that file's docstring)."""
from __future__ import annotations

from servicekit import packages
from servicekit.base import fail
from servicekit.elasticsearch import ES_PORT, es_password, es_request, start_es, stop_es
from servicekit.es_cluster import check_node_number, cluster_status, es_nodes, start_cluster, start_node, stop_node
from servicekit.opensearch import OS_PORT, os_healthy, os_identity, search_engine, start_opensearch, stop_opensearch
from servicekit.redis_server import REDIS_PORT, redis_ping, start_redis, stop_redis

USAGE = ("usage: services.py start|stop|status|password [es|opensearch|redis|all] | start|stop es-node N "
         "| install postgres|chromium|prometheus")


def main(argv: list[str]) -> None:
    if len(argv) < 1 or argv[0] not in {"start", "stop", "status", "password", "install"}:
        fail(USAGE)
    action, which = argv[0], (argv[1] if len(argv) > 1 else "all")
    nodes = es_nodes()
    if which == "es-node":
        if action not in ("start", "stop") or len(argv) != 3 or nodes < 2:
            fail("usage: ES_NODES=N services.py start|stop es-node I  (one node of an N-node cluster, N > 1)")
        i = check_node_number(argv[2], nodes)
        start_node(nodes, i) if action == "start" else stop_node(i)
        return
    if action == "install":
        if which not in packages.INSTALLS:
            fail("usage: services.py install " + "|".join(packages.INSTALLS))
        packages.install(packages.INSTALLS[which])
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
        status(nodes)


def status(nodes: int) -> None:
    if nodes > 1:
        cluster_status(nodes)
    else:
        code, body = es_request("/_cluster/health")
        print(f"elasticsearch 127.0.0.1:{ES_PORT}: {'up' if code == 200 else f'down ({body[:80]})'}")
    identity = os_identity()
    print(f"opensearch 127.0.0.1:{OS_PORT}: "
          + (f"up ({identity[0]} {identity[1]})" if identity and os_healthy() else
             f"answers but not healthy ({identity[0]} {identity[1]})" if identity else "down"))
    print(f"redis 127.0.0.1:{REDIS_PORT}: {'up' if redis_ping() else 'down'}")
