"""The import engine and `import_corpus`: upserts, unchanged detection, every bad input.

The indexing itself is the pipeline's (tests of indexer/tasks.py); here we check the database
side (statuses, counts) and that the changed documents were handed to dispatch on commit.
`manage.py import_corpus` in a process of its own (its Celery result backend is the real Redis):
tests/integration/test_import.py.
"""
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from indexer.importing import ImportOptions, Source, import_sources
from indexer.models import TITLE_MAX_LENGTH, Collection, Document
from tests.support.files import jsonl, make_pdf, write_beir

pytestmark = pytest.mark.django_db

DOCS = [{"_id": str(n), "title": f"Title {n}", "text": f"Text of document {n}.", "metadata": {"year": 2000 + n}}
        for n in range(1, 6)]


@pytest.fixture
def collection():
    return Collection.objects.create(name="Test", slug="test")


def source(name: str, data: bytes, charset: str | None = None) -> Source:
    return Source(name, len(data), lambda: data, charset)


def run(collection, *files, options=None, capture=None):
    return import_sources(collection, [source(n, d) for n, d in files], options)


def doc(collection, external_id) -> Document:
    return Document.objects.get(collection=collection, external_id=external_id)


def statuses(collection) -> dict[str, str]:
    return dict(collection.documents.values_list("external_id", "status"))


# --------------------------------------------------------------------------- upsert


def test_create_update_unchanged(collection, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        report = run(collection, ("corpus.jsonl", jsonl(*DOCS)))
    assert (report.created, report.updated, report.unchanged, report.has_rejections) == (5, 0, 0, False)
    assert len(callbacks) == 1  # one on_commit hand-over to the embed queue
    assert set(statuses(collection).values()) == {"queued"}
    first = doc(collection, "3")
    assert (first.title, first.text, first.metadata) == ("Title 3", "Text of document 3.", {"year": 2003})
    assert first.content_hash == Document.compute_hash("Title 3", "Text of document 3.", {"year": 2003})
    assert (first.source_filename, first.content_type) == ("corpus.jsonl", "application/jsonl")

    # The pipeline indexed them; the same import again changes and queues nothing.
    collection.documents.update(status=Document.Status.INDEXED)
    with django_capture_on_commit_callbacks() as callbacks:
        report = run(collection, ("corpus.jsonl", jsonl(*DOCS)))
    assert (report.created, report.updated, report.unchanged) == (0, 0, 5)
    assert report.changed_ids == [] and callbacks == []
    assert set(statuses(collection).values()) == {"indexed"}

    # One text, one metadata change and one new document: only those are queued.
    changed = [dict(d) for d in DOCS] + [{"_id": "6", "title": "", "text": "New."}]
    changed[0]["text"] = "Edited text."
    changed[1]["metadata"] = {"year": 1999}
    with django_capture_on_commit_callbacks() as callbacks:
        report = run(collection, ("corpus.jsonl", jsonl(*changed)))
    assert (report.created, report.updated, report.unchanged) == (1, 2, 3)
    assert len(callbacks) == 1
    assert sorted(report.changed_ids) == sorted(doc(collection, i).pk for i in ("1", "2", "6"))
    assert statuses(collection) == {"1": "queued", "2": "queued", "3": "indexed", "4": "indexed",
                                    "5": "indexed", "6": "queued"}
    assert doc(collection, "1").text == "Edited text."


def test_import_into_one_collection_leaves_another_alone(collection):
    other = Collection.objects.create(name="Other", slug="other")
    run(other, ("a.jsonl", jsonl(*DOCS)))
    report = run(collection, ("a.jsonl", jsonl(*DOCS[:2])))
    assert report.created == 2
    assert other.documents.count() == 5 and collection.documents.count() == 2


# --------------------------------------------------------------------------- bad records


def test_malformed_jsonl_lines_are_reported_by_number_and_the_rest_imported(collection):
    data = b"\n".join([
        json.dumps(DOCS[0]).encode(),
        b'{"_id": "broken", "text": ',            # line 2: truncated JSON
        b"",                                       # line 3: blank lines are fine
        b"[1, 2]",                                 # line 4: not an object
        '{"_id": "latin", "text": "caf\xe9"}'.encode("latin-1"),  # line 5: invalid UTF-8
        json.dumps(DOCS[1]).encode(),
    ])
    report = run(collection, ("corpus.jsonl", data))
    [file_report] = report.files
    assert file_report.created == 2 and file_report.error == ""
    reasons = {r.line: r.reason for r in file_report.rejected}
    assert set(reasons) == {2, 4, 5}
    assert reasons[2].startswith("not valid JSON: Expecting value")
    assert reasons[4] == "expected a JSON object, got list"
    assert reasons[5].startswith("invalid UTF-8 (byte 29")
    assert sorted(statuses(collection)) == ["1", "2"]


@pytest.mark.parametrize("record, reason", [
    ({"_id": "e", "title": "t", "text": "   \n "}, "empty text"),
    ({"_id": "e", "title": "t"}, "no 'text' field"),
    ({"title": "t", "text": "x"}, "no '_id' or 'id' field"),
    ({"_id": "", "text": "x"}, "empty external id"),
    ({"_id": ["a"], "text": "x"}, "the external id must be a string or an integer, not list"),
    ({"_id": "e", "title": "T" * (TITLE_MAX_LENGTH + 1), "text": "x"},
     f"the title is {TITLE_MAX_LENGTH + 1} characters; the limit is {TITLE_MAX_LENGTH}"),
    ({"_id": "e", "text": "x", "metadata": "nope"}, "'metadata' must be a JSON object"),
    ({"_id": "e", "text": 42}, "the text must be a string, not int"),
    ({"_id": "e", "text": "a\u0000b"}, "the text contains NUL characters"),
])
def test_bad_records(collection, record, reason):
    Document.objects.create(collection=collection, external_id="e", title="kept", text="kept text",
                            content_hash="h", status=Document.Status.INDEXED)
    report = run(collection, ("c.jsonl", jsonl(DOCS[0], record)))
    [rejection] = report.files[0].rejected
    assert (rejection.line, rejection.reason) == (2, reason)
    assert report.created == 1
    kept = doc(collection, "e")
    assert (kept.title, kept.text, kept.status) == ("kept", "kept text", "indexed")


def test_title_at_the_limit_is_accepted(collection):
    report = run(collection, ("c.jsonl", jsonl({"_id": "t", "title": "T" * TITLE_MAX_LENGTH, "text": "x"})))
    assert report.created == 1 and not report.has_rejections


def test_integer_ids_and_extra_fields_are_kept(collection):
    run(collection, ("c.jsonl", jsonl({"id": 7, "text": "x", "source": "pubmed", "metadata": {"year": 1}})))
    assert doc(collection, "7").metadata == {"source": "pubmed", "year": 1}


def test_duplicate_external_ids_are_rejected_everywhere_and_the_stored_one_kept(collection):
    run(collection, ("first.jsonl", jsonl({"_id": "dup", "text": "original"})))
    report = run(collection,
                 ("a.jsonl", jsonl({"_id": "dup", "text": "version A"}, {"_id": "ok", "text": "fine"})),
                 ("b.csv", b"id,title,text\ndup,B,version B\n"))
    a, b = report.files
    assert a.created == 1 and b.created == 0
    [ra], [rb] = a.rejected, b.rejected
    assert (ra.line, rb.line) == (1, 2)
    assert ra.reason == rb.reason == ("duplicate external id: it occurs 2 times in this import "
                                      "(a.jsonl line 1, b.csv line 2); none of them was imported")
    assert doc(collection, "dup").text == "original"


def test_two_files_with_one_name_in_one_import(collection):
    report = run(collection, ("a.txt", b"first"), ("a.txt", b"second"))
    assert [(f.created, f.error) for f in report.files] == [
        (1, ""), (0, "another file of this import has the same name")]
    assert doc(collection, "a.txt").text == "first"


# --------------------------------------------------------------------------- CSV


def test_csv_with_named_columns_and_metadata(collection):
    data = ('key,headline,body,journal\n'
            'p1,Coffee,"Multi-line\nbody, with comma",Nature\n'
            'p2,Tea,Plain body,Science\n'
            'p3,Bad,row,with,extra\n'
            'p4,Empty,,Cell\n').encode()
    report = run(collection, ("papers.csv", data),
                 options=ImportOptions(id_column="key", title_column="headline", text_column="body"))
    [f] = report.files
    assert f.created == 2
    assert [(r.line, r.external_id, r.reason) for r in f.rejected] == [
        (5, "p3", "the row has 5 fields; the header has 4"), (6, "p4", "empty text")]
    p1 = doc(collection, "p1")
    assert (p1.title, p1.text, p1.metadata) == ("Coffee", "Multi-line\nbody, with comma", {"journal": "Nature"})


def test_csv_without_the_named_columns_is_rejected_whole(collection):
    run(collection, ("c.jsonl", jsonl({"_id": "1", "text": "kept"})))
    report = run(collection, ("c.csv", b"id,body\n1,changed\n2,new\n"))
    assert report.files[0].error == ("missing column(s) 'text'; the header has 'id', 'body' "
                                     "(name them with the id/title/text column options)")
    assert doc(collection, "1").text == "kept" and collection.documents.count() == 1
    report = run(collection, ("c.csv", b"id,text\n1,changed\n"), options=ImportOptions(title_column="heading"))
    assert report.files[0].error.startswith("missing column(s) 'heading'")


def test_csv_in_another_encoding_needs_it_declared(collection):
    data = "id,text\n1,café\n".encode("latin-1")
    report = run(collection, ("c.csv", data))
    assert report.files[0].error.startswith("invalid UTF-8 at line 2")
    report = run(collection, ("c.csv", data), options=ImportOptions(encoding="latin-1"))
    assert report.created == 1 and doc(collection, "1").text == "café"


# --------------------------------------------------------------------------- whole files


def test_document_files(collection):
    report = run(collection,
                 ("notes.txt", "Größe und Gewicht.".encode("cp1252") * 5),
                 ("readme.md", b"# The Title\n\nBody text."),
                 ("page.html", b"<title>Page</title><script>evil()</script><p>Visible.</p>"),
                 ("paper.pdf", make_pdf(["PDF body text"], title="PDF title")))
    assert report.created == 4 and not report.has_rejections
    assert doc(collection, "notes.txt").text == "Größe und Gewicht." * 5
    assert doc(collection, "notes.txt").title == "notes"
    assert (doc(collection, "readme.md").title, doc(collection, "page.html").text) == ("The Title", "Visible.")
    pdf = doc(collection, "paper.pdf")
    assert (pdf.title, pdf.text, pdf.content_type) == ("PDF title", "PDF body text", "application/pdf")


@pytest.mark.parametrize("name, data, error", [
    ("paper.pdf", make_pdf(["secret"], user_password="pw"), "the PDF is encrypted with a password"),
    ("paper.pdf", make_pdf(["damaged"])[:300], "the PDF is damaged and could not be read"),
    ("paper.pdf", b"\x89PNG\r\n\x1a\n\x00\x00binary", "not a PDF file"),
    ("notes.txt", b"\x00\x01\x02\x03binary\x00", "this looks like a binary file"),
    ("corpus.jsonl", b"\x00\x01\x02", "this looks like a binary file"),
    ("notes.txt", b"   \n\n ", "the file is empty"),
    ("notes.txt", b"", "the file is empty"),
    ("slides.pptx", b"PK\x03\x04", "unsupported file type .pptx"),
    ("page.html", b"<html><script>only()</script></html>", "empty text"),
    ("notes.txt", b"x" * 2048, "the file is 2.0 KB; the limit is 1.0 KB (setting UPLOAD_MAX_BYTES)"),
    ("corpus.jsonl", b"\n\n", "the file is empty"),
])
@override_settings(UPLOAD_MAX_BYTES=1024)
def test_rejected_files_change_nothing(collection, name, data, error, django_capture_on_commit_callbacks):
    existing = Document.objects.create(collection=collection, external_id=name, title="kept", text="kept text",
                                       content_hash="h", status=Document.Status.INDEXED)
    with django_capture_on_commit_callbacks() as callbacks:
        report = run(collection, (name, data), ("other.txt", b"still imported"))
    rejected, other = report.files
    assert rejected.error.startswith(error) and rejected.outcome == "rejected"
    assert other.created == 1 and len(callbacks) == 1
    existing.refresh_from_db()
    assert (existing.title, existing.text, existing.status) == ("kept", "kept text", "indexed")
    assert report.changed_ids == [doc(collection, "other.txt").pk]


# --------------------------------------------------------------------------- the command


def test_command_imports_a_beir_folder_twice(tmp_path, capsys, django_capture_on_commit_callbacks):
    folder = write_beir(tmp_path / "beir", DOCS)
    with django_capture_on_commit_callbacks() as callbacks:
        call_command("import_corpus", "beirtest", str(folder), "--create", "--name", "BEIR test")
    out = capsys.readouterr().out
    assert "Created collection 'beirtest'." in out
    assert "Created 5, updated 0, unchanged 0, rejected 0 record(s) and 0 file(s); 5 document(s) queued" in out
    # Chunks at the collection's settings, as the pipeline cuts them: one per short document.
    # bge-small-en-v1.5 (the default) takes 512 tokens: the chunk size 256 fits with the title.
    assert "The 5 changed document(s) make 5 chunk(s) at 256 tokens with 32 overlap (bge-small-en-v1.5)" in out
    assert len(callbacks) == 1
    collection = Collection.objects.get(slug="beirtest")
    assert collection.name == "BEIR test" and collection.documents.filter(status="queued").count() == 5

    call_command("import_corpus", "beirtest", str(folder))
    out = capsys.readouterr().out
    assert "Created 0, updated 0, unchanged 5, rejected 0 record(s) and 0 file(s); 0 document(s) queued" in out
    assert "chunk(s)" not in out


def test_command_without_create_or_with_a_bad_path(tmp_path):
    folder = write_beir(tmp_path / "beir", DOCS)
    with pytest.raises(CommandError, match="no collection with slug 'nope'; pass --create"):
        call_command("import_corpus", "nope", str(folder))
    with pytest.raises(CommandError, match="does not exist"):
        call_command("import_corpus", "nope", str(tmp_path / "missing"), "--create")
    with pytest.raises(CommandError, match="is not a BEIR folder"):
        call_command("import_corpus", "nope", str(tmp_path), "--create", "--format", "beir")
    with pytest.raises(CommandError, match="cannot create collection 'Not a slug': Enter a valid “slug”"):
        call_command("import_corpus", "Not a slug", str(folder), "--create")
    assert not Collection.objects.exists()


def test_command_folder_of_files_with_a_rejected_one(tmp_path, capsys, collection):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("Plain text.")
    (folder / "sub" / "b.html").write_text("<p>Hyper text.</p>")
    (folder / "locked.pdf").write_bytes(make_pdf(["x"], user_password="pw"))
    with pytest.raises(CommandError, match=r"1 file\(s\) and 0 record\(s\) were rejected") as exc:
        call_command("import_corpus", "test", str(folder), "--no-chunk-count")
    assert exc.value.returncode == 1
    captured = capsys.readouterr()
    assert "REJECTED locked.pdf: the PDF is encrypted with a password" in captured.err
    assert "Created 2, updated 0, unchanged 0" in captured.out
    assert sorted(statuses(collection)) == ["a.txt", "sub/b.html"]


def test_command_csv_options(tmp_path, collection):
    path = tmp_path / "p.csv"
    path.write_text("key,body\nk1,Body one\n")
    call_command("import_corpus", "test", str(path), "--id-column", "key", "--text-column", "body",
                 "--no-chunk-count")
    assert doc(collection, "k1").text == "Body one"


# --------------------------------------------------------------------------- load_demo


def test_load_demo_is_idempotent(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEMO_DATASET", str(write_beir(tmp_path / "demo", DOCS)))
    call_command("load_demo", "--verbosity", "0")
    assert Collection.objects.get(slug="scifact").documents.count() == 5
    call_command("load_demo")
    assert "Created 0, updated 0, unchanged 5" in capsys.readouterr().out
    monkeypatch.setenv("DEMO_DATASET", str(tmp_path / "nothing"))
    with pytest.raises(CommandError, match="no BEIR corpus.jsonl there"):
        call_command("load_demo")


def test_queueing_a_whole_corpus_passes_the_databases_parameter_limit():
    """reconcile and reindex queue every document of a collection at once; one `pk IN (...)`
    over 300,000 ids failed on SQLite with "too many SQL variables"."""
    from indexer.tasks import queue_for_indexing

    collection = Collection.objects.create(name="Big", slug="big")
    doc = Document.objects.create(collection=collection, external_id="d1", title="t", text="x",
                                  status=Document.Status.FAILED, last_error="boom")
    missing = range(doc.pk + 1, doc.pk + 300_001)  # ids of no row: only the parameter count matters
    assert queue_for_indexing([doc.pk, *missing]) == 300_001
    doc.refresh_from_db()
    assert doc.status == Document.Status.QUEUED and doc.last_error == ""
