"""Judgments: BEIR import (strict reading, idempotent upsert, unknown ids reported), export
round trip, the management commands, and the staff-only endpoint of the search page."""
import json

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from indexer.models import Collection, Document
from relevance.judgments import (JudgmentFileError, collection_qrels, export_judgments, import_judgments,
                                read_qrels, read_queries)
from relevance.models import Judgment


def write_beir(tmp_path, queries, qrels_lines, header=True):
    queries_path = tmp_path / "queries.jsonl"
    queries_path.write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    qrels_path = tmp_path / "qrels.tsv"
    qrels_path.write_text(("query-id\tcorpus-id\tscore\n" if header else "") + "".join(l + "\n" for l in qrels_lines))
    return queries_path, qrels_path


@pytest.fixture
def collection(db):
    # Public: staff judge only in collections they may search (relevance/views.py).
    collection = Collection.objects.create(name="Papers", slug="papers", visibility=Collection.Visibility.PUBLIC)
    for ext in ("d1", "d2", "d3"):
        doc = Document(collection=collection, external_id=ext, title=f"Title {ext}", text=f"Text of {ext}")
        doc.refresh_hash()
        doc.save()
    return collection


def test_read_files_reports_bad_lines_with_numbers(tmp_path):
    queries_path, qrels_path = write_beir(tmp_path, {"1": "a question"}, ["1\td1\t1", "1\td2\tx"])
    assert read_queries(queries_path) == {"1": "a question"}
    with pytest.raises(JudgmentFileError, match=r"qrels.tsv:3: score 'x' is not an integer"):
        read_qrels(qrels_path)
    qrels_path.write_text("1\td1\n")
    with pytest.raises(JudgmentFileError, match=r"qrels.tsv:1: expected query-id, corpus-id and score"):
        read_qrels(qrels_path)
    qrels_path.write_text("1\td1\t9\n")
    with pytest.raises(JudgmentFileError, match=r"outside 0\.\.3"):
        read_qrels(qrels_path)
    queries_path.write_text('{"_id": "1", "text": "ok"}\n{"_id": "2", "text": \n')
    with pytest.raises(JudgmentFileError, match=r"queries.jsonl:2: not a query object"):
        read_queries(queries_path)


def test_import_is_idempotent_and_reports_unknown_ids(collection, tmp_path):
    queries = {"1": "Does  aspirin\nhelp?", "2": "Is coffee bad?"}
    lines = ["1\td1\t1", "1\td2\t0", "2\td3\t2", "2\tmissing-doc\t1", "9\td1\t1"]
    queries_path, qrels_path = write_beir(tmp_path, queries, lines)
    report = import_judgments(collection, read_queries(queries_path), read_qrels(qrels_path))
    assert (report.created, report.updated, report.unchanged) == (3, 0, 0)
    assert report.unknown_documents == {"missing-doc"} and report.unknown_queries == {"9"}
    assert report.skipped_lines == 2
    # The query text is normalised (whitespace) so that the search page's spelling matches.
    assert set(Judgment.objects.values_list("query", "document__external_id", "grade")) == {
        ("Does aspirin help?", "d1", 1), ("Does aspirin help?", "d2", 0), ("Is coffee bad?", "d3", 2)}

    again = import_judgments(collection, read_queries(queries_path), read_qrels(qrels_path))
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)
    assert Judgment.objects.count() == 3

    queries_path, qrels_path = write_beir(tmp_path, queries, ["1\td1\t2"])
    changed = import_judgments(collection, read_queries(queries_path), read_qrels(qrels_path))
    assert (changed.created, changed.updated, changed.unchanged) == (0, 1, 0)
    assert Judgment.objects.get(document__external_id="d1").grade == 2


def test_two_query_ids_with_one_text_are_one_query(collection, tmp_path):
    queries_path, qrels_path = write_beir(tmp_path, {"1": "Same claim", "2": "Same  claim"},
                                          ["1\td1\t1", "2\td1\t2", "2\td2\t1"])
    report = import_judgments(collection, read_queries(queries_path), read_qrels(qrels_path))
    assert (report.created, report.merged) == (2, 1)
    assert dict(Judgment.objects.values_list("document__external_id", "grade")) == {"d1": 2, "d2": 1}
    again = import_judgments(collection, read_queries(queries_path), read_qrels(qrels_path))
    assert (again.created, again.updated, again.unchanged, again.merged) == (0, 0, 2, 1)


def test_export_round_trip(collection, tmp_path):
    queries = {"q7": "Does aspirin help?", "q8": "Is coffee bad?"}
    queries_path, qrels_path = write_beir(tmp_path, queries, ["q7\td1\t1", "q7\td2\t0", "q8\td3\t2"])
    import_judgments(collection, read_queries(queries_path), read_qrels(qrels_path))
    staff = User.objects.create_user("judge", is_staff=True)
    Judgment.objects.create(collection=collection, query="A new question", document=collection.documents.get(
        external_id="d2"), grade=1, source=Judgment.Source.SEARCH, judged_by=staff)

    out = tmp_path / "export"
    _, _, lines = export_judgments(collection, out)
    assert lines == 4
    exported_queries, exported_qrels = read_queries(out / "queries.jsonl"), read_qrels(out / "qrels.tsv")
    assert exported_queries["q7"] == "Does aspirin help?" and exported_queries["q8"] == "Is coffee bad?"
    new_id = next(q for q, t in exported_queries.items() if t == "A new question")
    assert exported_qrels == {"q7": {"d1": 1, "d2": 0}, "q8": {"d3": 2}, new_id: {"d2": 1}}

    # Importing the export into a fresh collection with the same documents gives the same judgments.
    other = Collection.objects.create(name="Copy", slug="copy")
    for doc in collection.documents.all():
        Document.objects.create(collection=other, external_id=doc.external_id, title=doc.title, text=doc.text,
                                content_hash=doc.content_hash)
    import_judgments(other, exported_queries, exported_qrels)
    assert collection_qrels(other) == collection_qrels(collection)


def test_commands(collection, tmp_path, capsys):
    queries_path, qrels_path = write_beir(tmp_path, {"1": "Does aspirin help?"}, ["1\td1\t1", "1\tnope\t1"])
    with pytest.raises(CommandError, match=r"1 qrels lines were not imported, e\.g\. \['nope'\]"):
        call_command("import_judgments", "papers", queries=str(queries_path), qrels=str(qrels_path))
    assert Judgment.objects.count() == 1   # the good line was kept
    assert "1 created" in capsys.readouterr().out
    with pytest.raises(CommandError, match="no collection with slug 'nothere'"):
        call_command("import_judgments", "nothere", queries=str(queries_path), qrels=str(qrels_path))
    qrels_path.write_text("1\td1\tone\n")
    with pytest.raises(CommandError, match=r"not an integer \(nothing imported\)"):
        call_command("import_judgments", "papers", queries=str(queries_path), qrels=str(qrels_path))

    call_command("export_judgments", "papers", str(tmp_path / "out"))
    assert read_qrels(tmp_path / "out" / "qrels.tsv") == {"1": {"d1": 1}}


def test_search_page_endpoint_records_and_updates(collection, client):
    url = "/judgments/record"
    form = {"collection": "papers", "query": "  Is coffee   bad? ", "document": "d2", "grade": "relevant"}
    assert client.post(url, form).status_code == 403          # anonymous
    User.objects.create_user("visitor", password="pw")
    client.login(username="visitor", password="pw")
    assert client.post(url, form).status_code == 403          # signed in, not staff
    staff = User.objects.create_user("judge", password="pw", is_staff=True)
    client.login(username="judge", password="pw")
    assert client.get(url).status_code == 405

    response = client.post(url, form)
    assert response.status_code == 201, response.content
    judgment = Judgment.objects.get()
    assert (judgment.query, judgment.document.external_id, judgment.grade, judgment.judged_by) == (
        "Is coffee bad?", "d2", 1, staff)
    assert judgment.source == Judgment.Source.SEARCH

    response = client.post(url, {**form, "grade": "not-relevant", "next": "/search?q=coffee"})
    assert response.status_code == 302 and response["Location"] == "/search?q=coffee"
    assert Judgment.objects.get().grade == 0 and Judgment.objects.count() == 1
    # An off-site `next` is not followed: JSON answer instead of an open redirect.
    response = client.post(url, {**form, "grade": "2", "next": "https://evil.example/"})
    assert response.status_code == 200 and response.json()["grade"] == 2

    for bad, message in [({"grade": "7"}, "between 0 and 3"), ({"grade": "yes"}, "grade must be"),
                         ({"query": "   "}, "query is required"), ({"document": "d9"}, "unknown document"),
                         ({"collection": "nope"}, "unknown collection"), ({"query": "x" * 1001}, "longer than")]:
        response = client.post(url, {**form, **bad})
        assert response.status_code == 400 and message in response.json()["error"], bad
    assert Judgment.objects.count() == 1
