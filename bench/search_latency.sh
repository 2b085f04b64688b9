#!/usr/bin/env bash
# bench/search_latency.py with its own web server and rerank worker, against a collection that is
# already indexed and has a reranker (its own `reranker_model`, or RERANKER_MODEL).
#
#   DATABASE_URL=sqlite:///$PWD/var/relevance.sqlite3 ELASTICSEARCH_INDEX_PREFIX=relevance \
#       bench/search_latency.sh [--engine opensearch] [--queries 200] [--mode semantic]
#
# --engine: SEARCH_ENGINE for the server, the worker and the client alike (default: this shell's).
# Both processes get this shell's environment (the same settings as this script); they use a
# Redis key prefix of their own and are stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PORT=${BENCH_PORT:-8032}
export CELERY_KEY_PREFIX=${CELERY_KEY_PREFIX:-searchbench$$:} HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
# Every query comes from 127.0.0.1: the rate limit is raised out of reach (as bench/load.py does),
# not switched off, so each API request still pays the limiter's Redis round trip.
export SEARCH_RATE_LIMIT=1000000000/minute
ARGS=("$@")
for ((i = 0; i < ${#ARGS[@]}; i++)); do
    case "${ARGS[i]}" in
        --engine) export SEARCH_ENGINE="${ARGS[i + 1]:?--engine needs elasticsearch or opensearch}" ;;
        --engine=*) export SEARCH_ENGINE="${ARGS[i]#--engine=}" ;;
    esac
done
LOGS=$(mktemp -d /tmp/search-latency-XXXX)
.venv/bin/celery -A searchsite worker -Q "${RERANK_QUEUE:-rerank}" -c 1 -n "searchbench$$@%h" -l warning \
    --without-gossip --without-mingle >"$LOGS/worker.log" 2>&1 &
WORKER=$!
.venv/bin/gunicorn searchsite.wsgi -b 127.0.0.1:$PORT -w 1 --threads 4 --timeout 120 >"$LOGS/web.log" 2>&1 &
WEB=$!
trap 'kill $WORKER $WEB 2>/dev/null; wait $WORKER $WEB 2>/dev/null || true' EXIT
# Up when it answers at all (healthz says 503 here: no embed worker runs, and none is needed).
for _ in $(seq 120); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthz")" != 000 ] && break; sleep 1
done
echo "web and rerank worker up (logs in $LOGS)"
$PY bench/search_latency.py --url "http://127.0.0.1:$PORT" "$@"
