"""`evaluate` and `import_judgments` as a new user runs them: no --rerank, and a query file with
queries longer than the search accepts (skipped, counted and named, never the end of the run).
Reading the query file alone: tests/unit/test_evaluate.py."""
from __future__ import annotations

import json
import re

import pytest
from django.core.management import call_command

from relevance.models import QUERY_MAX_LENGTH, Judgment
from tests.support.searching import SCIENCE, add_documents, drop_collections, index_now
from tests.unit import test_evaluate as reading

pytestmark = pytest.mark.django_db

files = reading.files  # the fixture writing the query and qrels files


@pytest.fixture
def collection(es, db):
    from indexer.models import Collection

    collection = Collection.objects.create(name="Evaluate toy", slug="eval-toy")
    add_documents(collection, [(f"s{i}", title, text, {}) for i, (title, text) in enumerate(SCIENCE)])
    index_now(es, collection)
    yield collection
    drop_collections(es, collection)


def test_evaluate_without_rerank_skips_and_counts_long_queries(collection, files, tmp_path, capsys):
    queries_path, qrels_path = files
    out = tmp_path / "eval"
    call_command("evaluate", "eval-toy", queries=str(queries_path), qrels=str(qrels_path),
                 modes="keyword,semantic,hybrid", output=str(out))
    captured = capsys.readouterr()
    table = captured.out
    # Only judged queries count: long2 is not in the qrels.
    assert f"3 queries (1 skipped: empty or longer than {QUERY_MAX_LENGTH} characters, long1)" in table
    assert "long1" in captured.err
    for mode in ("keyword", "semantic", "hybrid"):
        assert re.search(rf"^{mode}\s+first stage\s+\d\.\d{{4}}", table, re.M), table
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["queries"] == 3
    assert metrics["skipped_queries"] == {"longer_than": QUERY_MAX_LENGTH, "count": 1, "ids": ["long1"]}
    assert set(metrics["results"]) == {"keyword", "semantic", "hybrid"}
    assert all(set(runs) == {"first stage"} for runs in metrics["results"].values())
    assert metrics["reranker_model"] is None and (out / "ndcg.png").stat().st_size > 1000
    assert metrics["results"]["keyword"]["first stage"]["mean"]["ndcg@10"] > 0.5


def test_import_judgments_skips_long_queries_and_says_so(collection, files, capsys):
    queries_path, qrels_path = files
    call_command("import_judgments", "eval-toy", queries=str(queries_path), qrels=str(qrels_path))
    out = capsys.readouterr().out
    assert "3 created" in out
    assert f"skipped 2 queries that are empty or longer than {QUERY_MAX_LENGTH} characters (e.g. long1, long2) and their 1 qrels lines" in out
    assert set(Judgment.objects.filter(collection=collection).values_list("query_id", flat=True)) == {"q1", "q2", "q3"}
