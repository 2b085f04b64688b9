"""`evaluate` and `import_judgments` as a new user runs them: no --rerank, and a query file with
queries longer than the search accepts (skipped, counted and named, never the end of the run)."""
from __future__ import annotations

import json
import re

import pytest
from django.core.management import call_command

from reranker.judgments import JudgmentFileError, read_queries
from reranker.models import QUERY_MAX_LENGTH, Judgment
from tests.support.searching import SCIENCE, add_documents, drop_collections, index_now

pytestmark = pytest.mark.django_db

QUERIES = {
    "q1": "telomerase activity in stem cells",
    "q2": "insulin receptor and glucose uptake",
    "q3": "vaccine adjuvants and the immune response",
    "long1": "telomerase " * (QUERY_MAX_LENGTH // 10 + 5),
    "long2": "insulin " * (QUERY_MAX_LENGTH // 7 + 5),  # in the file, but not judged in the qrels
}
QRELS = [("q1", "s0", 1), ("q2", "s1", 1), ("q3", "s2", 2), ("long1", "s0", 1)]


@pytest.fixture
def files(tmp_path):
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in QRELS))
    return queries, qrels


@pytest.fixture
def collection(es, db):
    from indexer.models import Collection

    collection = Collection.objects.create(name="Evaluate toy", slug="eval-toy")
    add_documents(collection, [(f"s{i}", title, text, {}) for i, (title, text) in enumerate(SCIENCE)])
    index_now(es, collection)
    yield collection
    drop_collections(es, collection)


def test_read_queries_is_strict_unless_asked_to_skip(files):
    queries_path, _ = files
    with pytest.raises(JudgmentFileError, match=f"query 'long1' is longer than {QUERY_MAX_LENGTH} characters"):
        read_queries(queries_path)
    too_long = {}
    queries = read_queries(queries_path, too_long=too_long)
    assert set(queries) == {"q1", "q2", "q3"} and set(too_long) == {"long1", "long2"}
    assert all(length > QUERY_MAX_LENGTH for length in too_long.values())


def test_evaluate_without_rerank_skips_and_counts_long_queries(collection, files, tmp_path, capsys):
    queries_path, qrels_path = files
    out = tmp_path / "eval"
    call_command("evaluate", "eval-toy", queries=str(queries_path), qrels=str(qrels_path),
                 modes="keyword,semantic,hybrid", output=str(out))
    captured = capsys.readouterr()
    table = captured.out
    # Only judged queries count: long2 is not in the qrels.
    assert f"3 queries (1 skipped: longer than {QUERY_MAX_LENGTH} characters, long1)" in table
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
    assert f"skipped 2 queries longer than {QUERY_MAX_LENGTH} characters (e.g. long1, long2) and their 1 qrels lines" in out
    assert set(Judgment.objects.filter(collection=collection).values_list("query_id", flat=True)) == {"q1", "q2", "q3"}

