"""Reading a query file with queries longer than the search accepts: an error unless asked to
skip them (`evaluate` and `import_judgments` on such a file: tests/integration/test_evaluate.py)."""
from __future__ import annotations

import json

import pytest

from relevance.judgments import JudgmentFileError, read_queries
from relevance.models import QUERY_MAX_LENGTH

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


def test_read_queries_is_strict_unless_asked_to_skip(files):
    queries_path, _ = files
    with pytest.raises(JudgmentFileError, match=f"query 'long1' is longer than {QUERY_MAX_LENGTH} characters"):
        read_queries(queries_path)
    too_long = {}
    queries = read_queries(queries_path, too_long=too_long)
    assert set(queries) == {"q1", "q2", "q3"} and set(too_long) == {"long1", "long2"}
    assert all(length > QUERY_MAX_LENGTH for length in too_long.values())


def test_an_empty_query_is_skipped_like_a_long_one(tmp_path):
    # CMRC 2018 ships a question with empty text: evaluate must skip it, not stop.
    path = tmp_path / "queries.jsonl"
    path.write_text(json.dumps({"_id": "q1", "text": "what is it"}) + "\n" + json.dumps({"_id": "blank", "text": "  "}) + "\n")
    with pytest.raises(JudgmentFileError, match="query 'blank' has empty text"):
        read_queries(path)
    skipped = {}
    assert read_queries(path, too_long=skipped) == {"q1": "what is it"} and skipped == {"blank": 0}
