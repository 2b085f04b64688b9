#!/usr/bin/env python3
"""Provision and run the project's local Elasticsearch, OpenSearch and Redis on loopback.

    python scripts/services.py start [es|opensearch|redis|all]
    python scripts/services.py stop  [es|opensearch|redis|all]
    python scripts/services.py status
    python scripts/services.py password                        the `elastic` user's password
    python scripts/services.py install postgres
    python scripts/services.py install chromium
    python scripts/services.py install prometheus
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
<runtime>/cluster-<ES_PORT>/, heap ES_HEAP (512m), security as on the single node
(servicekit/es_cluster.py).

OpenSearch (the second engine, issue 13) is OpenSearch's own test distribution
(`org.opensearch.distribution.integ-test-zip:opensearch`) with the k-NN plugin of the same
version (`org.opensearch.plugin:opensearch-knn`), both from Maven Central the same way, run
single-node on 127.0.0.1:$OPENSEARCH_PORT (9250). Maven Central's k-NN zip has no native
libraries (faiss, nmslib): only `method.engine: lucene` works, and the first flush of a faiss or
nmslib field kills the node (servicekit/opensearch.py). `start`/`start all` starts it only when
SEARCH_ENGINE=opensearch; `start opensearch` always does.

Redis is Debian's `redis-server` (installed with apt-get when missing).

`install postgres` only makes sure PostgreSQL's server binaries (`initdb`, `pg_ctl`) are there,
installing Debian's `postgresql` with apt-get when missing (as root): the integration tests start
a throwaway server of their own from them (tests/integration/test_postgres.py). Nothing is started.

`install prometheus` makes sure Debian's `prometheus` is there (apt-get, as root, when missing):
tests/integration/test_metrics.py starts one of its own on a loopback port to scrape /metrics.
Nothing is started here.

`install chromium` makes sure Debian's `chromium` and `chromium-driver` are there (apt-get, as
root, when missing): the browser tests (tests/integration/test_browser.py) drive headless Chromium through Selenium
with Debian's chromedriver, which matches the browser's version.

The code is the package scripts/servicekit/ (its __init__ lists the modules): each service
is described once (artifact and version, ports, heap, run-as user, folders, config lines) and
the steps of fetching, unpacking, starting, waiting for health and stopping are shared.
Only the standard library is used: this runs before the virtualenv exists.
"""
from __future__ import annotations

import sys
from pathlib import Path

# The package beside this file, also when this file is loaded by path (tests/integration/test_postgres.py).
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from servicekit.cli import main  # noqa: E402
from servicekit.elasticsearch import es_password, match_runtime_password  # noqa: E402
from servicekit.opensearch import check_plugin_zip, plugin_descriptor  # noqa: E402
from servicekit.packages import pg_binary  # noqa: E402

# What the tests call (tests/unit/test_stack.py, tests/unit/test_services_opensearch.py with
# services.Path, tests/integration/test_postgres.py).
__all__ = ["main", "Path", "es_password", "match_runtime_password", "check_plugin_zip", "plugin_descriptor",
           "pg_binary"]

if __name__ == "__main__":
    main(sys.argv[1:])
