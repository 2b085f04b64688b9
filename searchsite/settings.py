"""Settings, all read from the environment (every one documented in docs/operating.md, "Configuration", and .env.example).

Every variable has a default that works on a developer machine after `make run`; production
(docker-compose) sets them explicitly.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured


BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool) -> bool:
    value = env(name)
    if value is None:
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def env_int(name: str, default: int) -> int:
    value = env(name)
    try:
        return default if value is None else int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None


def env_float(name: str, default: float) -> float:
    value = env(name)
    try:
        return default if value is None else float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None


def env_seconds(name: str, default: float) -> float:
    value = env_float(name, default)
    if value <= 0:
        raise ImproperlyConfigured(f"{name} must be a positive number of seconds, not {value!r}")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


# --------------------------------------------------------------------------- Django core

DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = env("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")
    SECRET_KEY = "dev-only-insecure-key-set-DJANGO_SECRET_KEY-in-production"
ALLOWED_HOSTS = [h.strip() for h in env("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",")]
# Origins (scheme://host) whose forms may post here, e.g. https://search.example.org behind a proxy.
CSRF_TRUSTED_ORIGINS = [o.strip() for o in env("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

# HTTPS. The defaults suit plain http on a developer machine (`make run`); production behind
# HTTPS turns them on (.env.example; `manage.py check --deploy --fail-level WARNING` passes with
# those values, tests/unit/test_deploy.py).
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
# Health probes of a load balancer or orchestrator speak plain http inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
# HSTS is remembered by browsers for this many seconds: start low when trying it out.
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", False)
# Behind a proxy that ends TLS: the header it sets to `https` on secure requests (e.g.
# X-Forwarded-Proto). Only set it when the proxy always sets or strips that header, or a
# client could claim https on its own.
_proxy_ssl_header = env("DJANGO_SECURE_PROXY_SSL_HEADER")
if _proxy_ssl_header is not None and not re.fullmatch(r"[A-Za-z0-9-]+", _proxy_ssl_header):
    raise ImproperlyConfigured(
        f"DJANGO_SECURE_PROXY_SSL_HEADER must be a header name such as X-Forwarded-Proto, not {_proxy_ssl_header!r}")
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https") if _proxy_ssl_header else None
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "indexer",
    "reranker",
    "search",
    "relevance",
    "analytics",
    "api",
    "searchsite",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files from the web process itself (admin styles with DEBUG off, under gunicorn):
    # right after the security middleware, before anything that reads sessions or the database.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # After the messages middleware, before any view reads the upload (indexer/upload_limits.py).
    "indexer.upload_limits.UploadLimitMiddleware",
    # API keys on /api/ requests (a refused key is a 401 at once), before the rate limit, which
    # then counts per key (api/middleware.py).
    "api.middleware.ApiKeyMiddleware",
    # After authentication (signed-in users are counted by user); answers 429 (searchsite/ratelimit.py).
    "searchsite.ratelimit.RateLimitMiddleware",
    # After the rate limit (a client over its limit gets its 429 first): 503 past
    # SEARCH_MAX_IN_FLIGHT searches in progress in this process (searchsite/admission.py).
    "searchsite.admission.SearchAdmissionMiddleware",
]

ROOT_URLCONF = "searchsite.urls"
WSGI_APPLICATION = "searchsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite by default (embedded, nothing to start); PostgreSQL via DATABASE_URL in production.
DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}"), conn_max_age=60
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # Web process and workers write concurrently: WAL + a busy timeout + immediate
    # transactions keep SQLite from failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
if env("TEST_DATABASE_NAME"):
    # The end-to-end tests share one database file with real worker processes.
    DATABASES["default"]["TEST"] = {"NAME": env("TEST_DATABASE_NAME")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# `manage.py collectstatic` copies every app's static files here (the Docker image does it at
# build time); WhiteNoise serves them with DEBUG off. With DEBUG on they come from the apps.
STATIC_ROOT = Path(env("DJANGO_STATIC_ROOT", str(BASE_DIR / "var" / "static")))
# WhiteNoise warns at every start about a missing folder (tests, `make run` before collectstatic).
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # gzip copies made by collectstatic, sent to clients that accept them. No manifest (hashed
    # names): pages would then fail to render wherever collectstatic has not run (tests, `make run`).
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
MEDIA_ROOT = BASE_DIR / "var" / "media"

LOGIN_URL = "/admin/login/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        "elastic_transport": {"level": "WARNING"},
        "opensearch": {"level": "WARNING"},
        "opensearchpy.trace": {"level": "WARNING"},
        "sentence_transformers": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}

# --------------------------------------------------------------------------- search engine

# The engine behind indexer/store.py: Elasticsearch, or OpenSearch with its k-NN plugin.
SEARCH_ENGINE = env_choice("SEARCH_ENGINE", "elasticsearch", ("elasticsearch", "opensearch"))

# --------------------------------------------------------------------------- Elasticsearch

# Defaults follow the ports scripts/services.py uses (ES_PORT, REDIS_PORT). A comma-separated
# list names several nodes of one cluster: the client spreads requests over them and goes on
# with the others when one does not answer (indexer/store.py get_client).
ELASTICSEARCH_URL = env("ELASTICSEARCH_URL", f"http://127.0.0.1:{env('ES_PORT', '9200')}")
ELASTICSEARCH_USERNAME = env("ELASTICSEARCH_USERNAME", "elastic")
# The local node's password is generated by scripts/services.py; an explicit variable wins.
_password_file = Path(env("ELASTICSEARCH_PASSWORD_FILE", str(BASE_DIR / ".services" / "elastic-password")))
ELASTICSEARCH_PASSWORD = env("ELASTICSEARCH_PASSWORD") or (
    _password_file.read_text().strip() if _password_file.exists() else None
)
ELASTICSEARCH_API_KEY = env("ELASTICSEARCH_API_KEY")
ELASTICSEARCH_CA_CERTS = env("ELASTICSEARCH_CA_CERTS")
ELASTICSEARCH_VERIFY_CERTS = env_bool("ELASTICSEARCH_VERIFY_CERTS", True)
ELASTICSEARCH_TIMEOUT = env_float("ELASTICSEARCH_TIMEOUT", 30.0)
# Every index and alias this site creates starts with this prefix, so several sites (or the
# test suite) can share one cluster.
ELASTICSEARCH_INDEX_PREFIX = env("ELASTICSEARCH_INDEX_PREFIX", "searchsite")

# --------------------------------------------------------------------------- OpenSearch

# Read when SEARCH_ENGINE=opensearch. The default follows scripts/services.py (OPENSEARCH_PORT,
# security off); a secured cluster takes a user and password, and a CA for its certificate.
# Indices get ELASTICSEARCH_INDEX_PREFIX too.
OPENSEARCH_URL = env("OPENSEARCH_URL", f"http://127.0.0.1:{env('OPENSEARCH_PORT', '9250')}")
OPENSEARCH_USERNAME = env("OPENSEARCH_USERNAME", "admin")
OPENSEARCH_PASSWORD = env("OPENSEARCH_PASSWORD")
OPENSEARCH_CA_CERTS = env("OPENSEARCH_CA_CERTS")
OPENSEARCH_VERIFY_CERTS = env_bool("OPENSEARCH_VERIFY_CERTS", True)
OPENSEARCH_TIMEOUT = env_float("OPENSEARCH_TIMEOUT", 30.0)

# --------------------------------------------------------------------------- Redis / Celery

REDIS_URL = env("REDIS_URL", f"redis://127.0.0.1:{env('REDIS_PORT', '6379')}/0")
CELERY_BROKER_URL = env("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", REDIS_URL)
# A key prefix isolates several deployments (or test runs) on one Redis.
CELERY_KEY_PREFIX = env("CELERY_KEY_PREFIX", "")
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": CELERY_KEY_PREFIX} if CELERY_KEY_PREFIX else {}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = dict(CELERY_BROKER_TRANSPORT_OPTIONS)
# Indexing tasks acknowledge late: a message taken by a worker that dies unannounced (kill -9,
# power loss) goes back to the queue after this many seconds. It must exceed the longest task
# plus the longest retry countdown, or a slow task is handed out twice (harmless, just wasted).
CELERY_BROKER_TRANSPORT_OPTIONS |= {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600),
    # How often a worker looks for such messages (seconds); lower with a low visibility timeout.
    "unacked_restore_interval": env_int("CELERY_UNACKED_RESTORE_INTERVAL", 10),
    "unacked_restore_throttle": 1,
}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Queue names; the routing in searchsite/celery.py sends each app's tasks to its queue.
EMBED_QUEUE = env("EMBED_QUEUE", "embed")
RERANK_QUEUE = env("RERANK_QUEUE", "rerank")
# Evaluate and train runs started from the admin (relevance/run_tasks.py): minutes of CPU or GPU
# each, so on a queue of their own (the Procfile's `train` worker, one at a time), never in the
# way of indexing or of a search's rerank.
TRAIN_QUEUE = env("TRAIN_QUEUE", "train")

# A worker reserves one message per pool process beyond the one it runs, not Celery's four:
# an indexing batch takes minutes, and with acks_late the batches a busy worker had reserved
# would wait behind it while another worker idles (and, if it died, come back only after the
# visibility timeout); a reserved rerank request would miss its RERANK_TIMEOUT the same way.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

# Time limits per task kind (seconds). At the soft limit the task gets an exception: indexing
# batches and builds end `failed` with "... ran past its soft time limit of N s
# (<SETTING>)" (indexer/tasks.py, error_text); a task still running TASK_HARD_TIME_LIMIT_GRACE
# seconds later (stuck in native code) is killed with its pool process, and fails the same way.
# Indexing tasks acknowledge late, so CELERY_VISIBILITY_TIMEOUT must exceed their hard limit.
# The limits travel in each message, from the settings of the process that queues the task
# (web, beat, a worker): give every process the same values. Enforced by the prefork pool
# (Celery's default), not by `--pool solo` or `threads`.
INDEX_BATCH_SOFT_TIME_LIMIT = env_seconds("INDEX_BATCH_SOFT_TIME_LIMIT", 1200)  # INDEX_BATCH_SIZE documents
INDEX_BUILD_SOFT_TIME_LIMIT = env_seconds("INDEX_BUILD_SOFT_TIME_LIMIT", 1800)  # a build's start and check/swap
INDEX_MAINTENANCE_SOFT_TIME_LIMIT = env_seconds("INDEX_MAINTENANCE_SOFT_TIME_LIMIT", 1800)  # reconcile, index drops
# A search waits RERANK_TIMEOUT at most; this only frees a worker from a runaway request (the
# first request for a model may load and export it, minutes on a CPU).
QUERY_SOFT_TIME_LIMIT = env_seconds("QUERY_SOFT_TIME_LIMIT", 300)
MODEL_LOAD_SOFT_TIME_LIMIT = env_seconds("MODEL_LOAD_SOFT_TIME_LIMIT", 1800)  # a rerank worker loading new models
# An evaluate or train run from the admin (relevance/run_tasks.py): the CPU demo recipe trains in
# about 20 minutes on 2 cores; larger settings on a CPU take hours.
RERANKER_RUN_SOFT_TIME_LIMIT = env_seconds("RERANKER_RUN_SOFT_TIME_LIMIT", 6 * 3600)
TASK_HARD_TIME_LIMIT_GRACE = env_seconds("TASK_HARD_TIME_LIMIT_GRACE", 60)
# Each kind: the setting that names its soft limit (quoted in the error text), the limit, its tasks.
TASK_TIME_LIMIT_KINDS = {
    "INDEX_BATCH_SOFT_TIME_LIMIT": (INDEX_BATCH_SOFT_TIME_LIMIT, (
        "indexer.tasks.index_documents", "indexer.tasks.remove_documents", "indexer.tasks.remove_deleted_documents")),
    "INDEX_BUILD_SOFT_TIME_LIMIT": (INDEX_BUILD_SOFT_TIME_LIMIT, (
        "indexer.tasks.prepare_build", "indexer.tasks.finalize_build")),
    "INDEX_MAINTENANCE_SOFT_TIME_LIMIT": (INDEX_MAINTENANCE_SOFT_TIME_LIMIT, (
        "indexer.tasks.reconcile", "indexer.tasks.drop_indices",
        "analytics.tasks.prune_search_log", "analytics.tasks.derive_click_judgments")),
    "QUERY_SOFT_TIME_LIMIT": (QUERY_SOFT_TIME_LIMIT, ("reranker.tasks.rerank", "search.tasks.embed_queries")),
    "MODEL_LOAD_SOFT_TIME_LIMIT": (MODEL_LOAD_SOFT_TIME_LIMIT, ("reranker.tasks.warm_up",)),
    "RERANKER_RUN_SOFT_TIME_LIMIT": (RERANKER_RUN_SOFT_TIME_LIMIT, (
        "relevance.run_tasks.evaluate", "relevance.run_tasks.train")),
}
# Celery sets these attributes on the tasks it registers (searchsite/celery.py reads CELERY_*).
CELERY_TASK_ANNOTATIONS = {
    task: {"soft_time_limit": soft, "time_limit": soft + TASK_HARD_TIME_LIMIT_GRACE}
    for soft, tasks in TASK_TIME_LIMIT_KINDS.values() for task in tasks
}

# --------------------------------------------------------------------------- Models

# The bi-encoder of new collections: a catalogue name (indexer/model_catalog.py, installed by
# `make models` / `manage.py install_model`), a sentence-transformers id or a local directory.
# EMBEDDING_MODEL for English and language "none", EMBEDDING_MODEL_ZH for Chinese (docs/models.md).
EMBEDDING_MODEL = env("EMBEDDING_MODEL", "bge-small-en-v1.5")
EMBEDDING_MODEL_ZH = env("EMBEDDING_MODEL_ZH", "bge-small-zh-v1.5")
# "auto" picks cuda (fp16) when present, else mps, else cpu.
EMBEDDING_DEVICE = env("EMBEDDING_DEVICE", "auto")
EMBEDDING_BATCH_SIZE = env_int("EMBEDDING_BATCH_SIZE", 64)
# auto: torch on CUDA (fp16), OpenVINO on a CPU (indexer/encoders.py): int8 where the model's int8
# record allows it (manage.py quantize_embedding), else float32; torch, openvino (float32) or
# openvino-int8 force one. Checked by the indexer app (indexer/apps.py).
EMBEDDING_RUNTIME = env("EMBEDDING_RUNTIME", "auto")
# Threads of the OpenVINO encoder in one process; 0: every core the process may use.
EMBEDDING_THREADS = env_int("EMBEDDING_THREADS", 0)
# Documents per indexing task (primary keys in one Celery message). Large enough that a task's
# chunks, sorted by length, fill several encode batches of similar length (little padding):
# bench/indexing.py on SciFact (CPU): end-to-end/raw 0.84 with 32 (first 1,000 documents), 0.95
# with 128 (same), full corpus 0.884 with 128 and 1.011 with 256.
INDEX_BATCH_SIZE = env_int("INDEX_BATCH_SIZE", 256)
# Retries of indexing tasks on Elasticsearch connection errors, timeouts, 429/503 and a locked
# database: exponential backoff from INDEX_RETRY_BACKOFF seconds, capped, with full jitter; the
# defaults wait about 3 minutes in all before the documents are marked failed.
INDEX_MAX_RETRIES = env_int("INDEX_MAX_RETRIES", 10)
INDEX_RETRY_BACKOFF = env_int("INDEX_RETRY_BACKOFF", 2)
INDEX_RETRY_BACKOFF_MAX = env_int("INDEX_RETRY_BACKOFF_MAX", 60)
# Periodic reconcile (celery beat, `beat` in the Procfile): documents queued longer than
# RECONCILE_OLDER_THAN seconds are considered lost by Redis and queued again.
RECONCILE_INTERVAL = env_int("RECONCILE_INTERVAL", 900)
RECONCILE_OLDER_THAN = env_int("RECONCILE_OLDER_THAN", 3600)
# A collection's first build going live with at least this many documents starts a train run
# of its reranker from its own documents (relevance/auto_reranker.py, train_reranker
# --pseudo-only); 0: never.
AUTO_RERANKER_MIN_DOCUMENTS = env_int("AUTO_RERANKER_MIN_DOCUMENTS", 500)
# A collection whose judgments (staff + implicit) grew by this many since its last train run
# trains again, the new model replacing the installed one only if better on the same held-out
# queries (checked after each derivation of click judgments); 0: never.
AUTO_RERANKER_NEW_JUDGMENTS = env_int("AUTO_RERANKER_NEW_JUDGMENTS", 200)
# Search analytics (analytics/, docs/analytics.md): every search and click is logged unless
# SEARCH_LOG_ENABLED is off; rows older than SEARCH_LOG_DAYS are deleted every
# SEARCH_LOG_PRUNE_INTERVAL seconds (celery beat).
SEARCH_LOG_ENABLED = env_bool("SEARCH_LOG_ENABLED", True)
SEARCH_LOG_DAYS = env_int("SEARCH_LOG_DAYS", 90)
SEARCH_LOG_PRUNE_INTERVAL = env_seconds("SEARCH_LOG_PRUNE_INTERVAL", 3600)
# How often the log's clicks are turned into implicit judgments (analytics/click_judgments.py).
CLICK_JUDGMENTS_INTERVAL = env_seconds("CLICK_JUDGMENTS_INTERVAL", 24 * 3600)
CELERY_BEAT_SCHEDULE = {
    "reconcile-index": {"task": "indexer.tasks.reconcile", "schedule": float(RECONCILE_INTERVAL)},
    "prune-search-log": {"task": "analytics.tasks.prune_search_log", "schedule": float(SEARCH_LOG_PRUNE_INTERVAL)},
    "click-judgments": {"task": "analytics.tasks.derive_click_judgments", "schedule": float(CLICK_JUDGMENTS_INTERVAL)},
}
# Shards and replicas of a new collection's indices (each collection has its own, in the admin;
# a build uses the values it started with). One shard and no replica suit one node; on a
# cluster, replicas 1 keeps every chunk searchable and writable when a node stops (docs/operating.md,
# "Elasticsearch as a cluster"). Checked against the limits in indexer/models.py.
INDEX_SHARDS = env_int("INDEX_SHARDS", 1)
INDEX_REPLICAS = env_int("INDEX_REPLICAS", 0)
# Largest file the admin upload and `import_corpus` accept (bytes); bigger files are rejected.
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 50 * 1024 * 1024)
# Most files one admin upload takes (Django's DATA_UPLOAD_MAX_NUMBER_FILES, 100 by default);
# more is answered with a message, nothing imported (indexer/upload_limits.py).
UPLOAD_MAX_FILES = env_int("UPLOAD_MAX_FILES", 500)
DATA_UPLOAD_MAX_NUMBER_FILES = UPLOAD_MAX_FILES
# The API's limits (docs/api.md; checked in api/apps.py): a POST of documents (bytes, documents
# per body), a POST /api/rerank (bytes, documents, characters per document).
API_DOCUMENTS_MAX_BYTES = env_int("API_DOCUMENTS_MAX_BYTES", 8 * 1024 * 1024)
API_DOCUMENTS_MAX_LINES = env_int("API_DOCUMENTS_MAX_LINES", 1000)
API_RERANK_MAX_BYTES = env_int("API_RERANK_MAX_BYTES", 1024 * 1024)
API_RERANK_MAX_DOCUMENTS = env_int("API_RERANK_MAX_DOCUMENTS", 100)
API_RERANK_MAX_CHARS = env_int("API_RERANK_MAX_CHARS", 4000)
# Who may search a new collection (admin, `import_corpus --create`) unless told otherwise:
# public, authenticated or groups (checked in indexer/models.py). `groups` with no group
# selected means superusers only, until an admin opens it up: a confidential folder imported
# from the shell must not be searchable by anyone the moment it is indexed. The demo
# (`load_demo`) asks for public explicitly.
DEFAULT_COLLECTION_VISIBILITY = env("DEFAULT_COLLECTION_VISIBILITY", "groups")

# --------------------------------------------------------------------------- Health

HEALTH_TIMEOUT = env_float("HEALTH_TIMEOUT", 2.0)
# /healthz tells anyone whether the site is up; the details (engine URL, versions, worker host
# names) only to staff or to a request with `Authorization: Bearer <HEALTH_TOKEN>` (empty: staff only).
HEALTH_TOKEN = env("HEALTH_TOKEN", "")

# --------------------------------------------------------------------------- Metrics (searchsite/metrics.py)

# /metrics (Prometheus text format) answers the addresses listed (REMOTE_ADDR, or the one the
# trusted proxies name: RATE_LIMIT_TRUSTED_PROXIES; CIDR blocks allowed) and any request with
# `Authorization: Bearer <METRICS_TOKEN>`; anyone else gets 403.
METRICS_ALLOWED_ADDRESSES = [a.strip() for a in env("METRICS_ALLOWED_ADDRESSES", "127.0.0.1,::1").split(",")
                             if a.strip()]
METRICS_TOKEN = env("METRICS_TOKEN", "")

# --------------------------------------------------------------------------- Search (search/)

# Chunks the first stage returns per mode (the kNN `k`; BM25 `size`); pages are cut from these.
SEARCH_DEPTH = env_int("SEARCH_DEPTH", 100)
# HNSW candidates examined per shard for kNN (at least SEARCH_DEPTH; more = better recall, slower).
SEARCH_NUM_CANDIDATES = env_int("SEARCH_NUM_CANDIDATES", 200)
# The hybrid mode's fusion for collections without a rule chosen on their judgments
# (manage.py choose_fusion): `method:weight[:k]`, e.g. `minmax:0.65`, `rrf:0.5:60` (plain RRF).
# Empty: each language's default (search/hybrid_fusion.py; checked at start, search/apps.py).
SEARCH_HYBRID_FUSION = env("SEARCH_HYBRID_FUSION", "")
SEARCH_DEFAULT_MODE = env("SEARCH_DEFAULT_MODE", "hybrid")
# Results per page when the request gives no `k`, and the largest `k` accepted.
SEARCH_PAGE_SIZE = env_int("SEARCH_PAGE_SIZE", 10)
SEARCH_MAX_PAGE_SIZE = env_int("SEARCH_MAX_PAGE_SIZE", 50)
# Seconds a ranked list is kept so that pages 2, 3... of a search show the order page 1 showed.
SEARCH_SNAPSHOT_SECONDS = env_int("SEARCH_SNAPSHOT_SECONDS", 600)
# Query embedding: "local" (the web process loads the bi-encoder once) or "queue" (the `embed`
# workers encode it); QUERY_EMBEDDING_TIMEOUT bounds the wait on the queue.
QUERY_EMBEDDING = env("QUERY_EMBEDDING", "local")
QUERY_EMBEDDING_TIMEOUT = env_float("QUERY_EMBEDDING_TIMEOUT", 5.0)
QUERY_VECTOR_CACHE_SIZE = env_int("QUERY_VECTOR_CACHE_SIZE", 4096)

# --------------------------------------------------------------------------- Reranking (reranker/)

# The site's cross-encoder: a Hugging Face id or a local directory; a collection's own
# `reranker_model` wins. Empty: results keep the first-stage order ("not reranked").
RERANKER_MODEL = env("RERANKER_MODEL", "")
RERANKER_DEVICE = env("RERANKER_DEVICE", "auto")
# auto: float16 on CUDA, bfloat16 autocast on CPUs with native bfloat16, else float32
# (common/precision.py); or float32 / bfloat16 / float16. Checked by the reranker app (reranker/apps.py).
RERANKER_PRECISION = env("RERANKER_PRECISION", "auto")
RERANKER_MAX_LENGTH = env_int("RERANKER_MAX_LENGTH", 512)
RERANKER_BATCH_SIZE = env_int("RERANKER_BATCH_SIZE", 32)
# auto: torch on CUDA; on a CPU, OpenVINO (int8 where the model's export says int8 kept its
# held-out quality, else float32). torch, openvino (float32) or openvino-int8 force one
# (reranker/scorers.py). The onnx names of an older runtime are refused with a message (reranker/apps.py).
RERANKER_RUNTIME = env("RERANKER_RUNTIME", "auto")
# Threads per scoring process; 0: the cores the worker may use, shared among its
# RERANK_CONCURRENCY pool processes.
RERANKER_THREADS = env_int("RERANKER_THREADS", 0)
RERANK_CONCURRENCY = env_int("RERANK_CONCURRENCY", 1)
# Most chunks of the first stage sent to the reranker (the rest keep their first-stage order after them).
RERANK_TOP_N = env_int("RERANK_TOP_N", 50)
# Latency budget (seconds) the web process waits for the rerank worker before it shows the
# first-stage order with "not reranked: ...".
RERANK_TIMEOUT = env_float("RERANK_TIMEOUT", 2.0)
# The rerank depth adapts to the worker's measured speed: a search sends as many chunks as the
# worker scores in RERANK_TARGET_SECONDS (at most RERANK_TOP_N, at least RERANK_MIN_CANDIDATES).
# The target sits below the timeout to leave room for the queue, the round trip and slower
# requests.
RERANK_TARGET_SECONDS = env_float("RERANK_TARGET_SECONDS", 0.3)
RERANK_MIN_CANDIDATES = env_int("RERANK_MIN_CANDIDATES", 10)
# Admission control (search/rerank_client.py): before sending, a search estimates when the workers
# would answer, from their speed and the pairs already waiting (reranker/backlog.py); what cannot
# come back within RERANK_TIMEOUT is not sent ("not reranked: the rerank workers are saturated"),
# and the worker drops or cuts a request at its deadline. Off: every request is sent and waited
# for (the behaviour before it; bench/load.py compares both).
RERANK_ADMISSION = env_bool("RERANK_ADMISSION", True)
# Of the budget, what the round trip takes besides scoring (queue pick-up, result, polling).
RERANK_ROUND_TRIP_SECONDS = env_float("RERANK_ROUND_TRIP_SECONDS", 0.1)

# Snapshots of ranked lists (search/results.py) live in Redis, shared by every web process.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "search": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{CELERY_KEY_PREFIX}search",
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    },
}

# --------------------------------------------------------------------------- Rate limits (searchsite/ratelimit.py)

# Searches (the search page with a query, /api/search) per client in a window that opens at its
# first search; over it, 429 with Retry-After. Anonymous clients are counted by address, signed-in
# users by user id with their own, higher limit. Off: nothing is counted.
SEARCH_RATE_LIMIT_ENABLED = env_bool("SEARCH_RATE_LIMIT_ENABLED", True)
SEARCH_RATE_LIMIT = env("SEARCH_RATE_LIMIT", "60/minute")
SEARCH_RATE_LIMIT_USER = env("SEARCH_RATE_LIMIT_USER", "300/minute")
# Both are read by searchsite/ratelimit.py's parse_rate, checked when Django starts (searchsite/apps.py).
# Reverse proxies in front of the web server that append to X-Forwarded-For (0: the client is
# REMOTE_ADDR and the header is ignored, since any client can send it).
RATE_LIMIT_TRUSTED_PROXIES = env_int("RATE_LIMIT_TRUSTED_PROXIES", 0)
if RATE_LIMIT_TRUSTED_PROXIES < 0:
    raise ImproperlyConfigured(f"RATE_LIMIT_TRUSTED_PROXIES must be 0 or more, not {RATE_LIMIT_TRUSTED_PROXIES}")
# The counters' Redis; each request waits at most this long for it (seconds) before it goes
# through uncounted. Keys start with CELERY_KEY_PREFIX, so test runs and deployments sharing one
# Redis never share counters.
RATE_LIMIT_REDIS_URL = env("RATE_LIMIT_REDIS_URL", REDIS_URL)
RATE_LIMIT_REDIS_TIMEOUT = env_float("RATE_LIMIT_REDIS_TIMEOUT", 0.25)
if RATE_LIMIT_REDIS_TIMEOUT <= 0:
    raise ImproperlyConfigured(f"RATE_LIMIT_REDIS_TIMEOUT must be a positive number of seconds, not {RATE_LIMIT_REDIS_TIMEOUT}")
RATE_LIMIT_KEY_PREFIX = f"{CELERY_KEY_PREFIX}ratelimit:"

# --------------------------------------------------------------------------- Load shedding (searchsite/admission.py)

# Searches in progress in one web process (0: no bound); past it, 503 at once with Retry-After
# SEARCH_RETRY_AFTER seconds. Give gunicorn more threads than this (--threads), so that the
# threads past the bound answer the refusals (docs/operating.md, "Under load").
SEARCH_MAX_IN_FLIGHT = env_int("SEARCH_MAX_IN_FLIGHT", 4)
SEARCH_RETRY_AFTER = env_int("SEARCH_RETRY_AFTER", 1)
