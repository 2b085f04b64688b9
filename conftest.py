"""Test-run isolation, set before Django reads its settings.

Each pytest run gets its own Elasticsearch index prefix, Redis key prefix (Celery queues) and
SQLite database file, so a test run never touches the data of `make run` (or of another test
run) on the same Elasticsearch and Redis. Worker processes started by the tests inherit these.
"""
import os
import secrets
import tempfile
from pathlib import Path

RUN_ID = secrets.token_hex(4)
TMP = Path(tempfile.mkdtemp(prefix=f"searchsite-test-{RUN_ID}-"))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")
os.environ["ELASTICSEARCH_INDEX_PREFIX"] = f"test-{RUN_ID}"
os.environ["CELERY_KEY_PREFIX"] = f"test-{RUN_ID}:"
os.environ["TEST_DATABASE_NAME"] = str(TMP / "test.sqlite3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["SEARCHSITE_TEST_TMP"] = str(TMP)
# Rate limits off: every test search comes from the test client's one address (127.0.0.1), and
# tests/integration/test_api.py alone sends dozens in a minute and a half on 2 busy cores (60 per
# minute is the default limit), so a faster machine would see 429s. The tests of the limits
# (tests/*/test_ratelimit.py) switch them on with limits of their own.
os.environ["SEARCH_RATE_LIMIT_ENABLED"] = "0"
# No automatic reranker training after a test's first build (relevance/auto_reranker.py): it would
# queue runs that no test waits for; tests/unit/test_auto_reranker.py switches it on.
os.environ["AUTO_RERANKER_MIN_DOCUMENTS"] = "0"
os.environ["AUTO_RERANKER_NEW_JUDGMENTS"] = "0"  # nor after click judgments (tests/unit/test_auto_retrain.py)

import django  # noqa: E402

# pytest-django finds DJANGO_SETTINGS_MODULE only if it is set before this file is read, so
# set Django up here, after the variables above.
django.setup()
