"""The collection and document admin through Django's test client: upload with a per-file
report, per-status counts, filters, search and the bulk actions."""
import re

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from indexer.models import Collection, Document
from tests.support.files import jsonl, make_pdf

pytestmark = pytest.mark.django_db


@pytest.fixture
def collection():
    return Collection.objects.create(name="Papers", slug="papers")


def upload_url(collection):
    return reverse("admin:indexer_collection_upload", args=[collection.pk])


def add_doc(collection, external_id, status="indexed", text="stored text", error=""):
    return Document.objects.create(collection=collection, external_id=external_id, title=f"Title {external_id}",
                                   text=text, content_hash=Document.compute_hash(f"Title {external_id}", text, {}),
                                   status=status, last_error=error)


def upload_files():
    return [
        SimpleUploadedFile("notes.txt", b"Plain notes about coffee.", "text/plain"),
        SimpleUploadedFile("readme.md", b"# Tea\n\nMarkdown about tea.", "text/markdown"),
        SimpleUploadedFile("page.html", b"<title>Page</title><script>track()</script><p>Visible words.</p>",
                           "text/html"),
        SimpleUploadedFile("paper.pdf", make_pdf(["A real PDF."], title="PDF paper"), "application/pdf"),
        SimpleUploadedFile("batch.jsonl", jsonl({"_id": "j1", "title": "J1", "text": "first"},
                                                b'{"_id": "j2", "text": ',
                                                {"_id": "j3", "title": "J3", "text": "third"}),
                           "application/octet-stream"),
        SimpleUploadedFile("table.csv", b"id,title,text\nc1,C1,csv row\n", "text/csv"),
        # Rejected: encrypted, and its name is the external id of a document that must survive.
        SimpleUploadedFile("locked.pdf", make_pdf(["secret"], user_password="pw"), "application/pdf"),
    ]


def test_upload_several_files_with_one_rejected(admin_client, collection, django_capture_on_commit_callbacks):
    survivor = add_doc(collection, "locked.pdf", text="the good old version")
    page = admin_client.get(upload_url(collection))
    assert page.status_code == 200 and b'type="file"' in page.content and b"multiple" in page.content

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(upload_url(collection), {"files": upload_files()})
    assert response.status_code == 200
    report = response.context["report"]
    by_name = {f.name: f for f in report.files}
    assert [(f.name, f.created, f.outcome) for f in report.files] == [
        ("notes.txt", 1, "ok"), ("readme.md", 1, "ok"), ("page.html", 1, "ok"), ("paper.pdf", 1, "ok"),
        ("batch.jsonl", 2, "partly rejected"), ("table.csv", 1, "ok"), ("locked.pdf", 0, "rejected")]
    assert [str(r) for r in by_name["batch.jsonl"].rejected] == [
        "line 2: not valid JSON: Expecting value (column 22)"]
    assert len(callbacks) == 1

    html = response.content.decode()
    start = html.index('id="upload-report"')
    table = html[start:html.index("</table>", start)]
    assert "the PDF is encrypted with a password; upload an unprotected copy" in table
    assert "line 2: not valid JSON" in table
    assert table.count("<tr>") == 8  # header + 7 files
    assert "7 created, 0 updated, 0 unchanged; 7 queued for indexing. 1 file(s) and 1 record(s) were rejected" in html

    survivor.refresh_from_db()
    assert (survivor.text, survivor.status) == ("the good old version", "indexed")
    docs = {d.external_id: d for d in collection.documents.all()}
    assert sorted(docs) == ["c1", "j1", "j3", "locked.pdf", "notes.txt", "page.html",
                            "paper.pdf", "readme.md"]
    assert docs["page.html"].text == "Visible words." and docs["page.html"].title == "Page"
    assert docs["paper.pdf"].title == "PDF paper" and docs["notes.txt"].source_filename == "notes.txt"
    assert {d.status for k, d in docs.items() if k != "locked.pdf"} == {"queued"}

    # The same upload again: everything unchanged, nothing queued.
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(upload_url(collection), {"files": upload_files()})
    assert response.context["report"].unchanged == 7 and callbacks == []


def test_upload_without_files_is_a_form_error(admin_client, collection):
    response = admin_client.post(upload_url(collection), {})
    assert response.status_code == 200 and response.context["report"] is None
    assert "This field is required." in response.content.decode()


def test_upload_over_the_file_limit_is_refused_with_a_message(admin_client, collection, settings):
    """More files than UPLOAD_MAX_FILES: Django alone answers a bare 400; here the page comes
    back saying what the limit is, and nothing is imported."""
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    add_doc(collection, "keep.txt", text="kept")
    def files(n):
        return [SimpleUploadedFile(f"f{i}.txt", f"file {i}".encode(), "text/plain") for i in range(n)]

    response = admin_client.post(upload_url(collection), {"files": files(4)}, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain == [(upload_url(collection), 302)]
    assert "Nothing was uploaded: one upload takes at most 3 files (UPLOAD_MAX_FILES)" in response.content.decode()
    assert list(collection.documents.values_list("external_id", flat=True)) == ["keep.txt"]
    # At the limit the upload goes through.
    response = admin_client.post(upload_url(collection), {"files": files(3)})
    assert response.status_code == 200 and "3 created" in response.content.decode()


def test_upload_csv_with_column_options(admin_client, collection):
    csv_file = SimpleUploadedFile("t.csv", b"key,body\nk1,text one\n", "text/csv")
    response = admin_client.post(upload_url(collection), {"files": [csv_file], "id_column": "key",
                                                           "text_column": "body"})
    assert response.context["report"].created == 1
    assert collection.documents.get().external_id == "k1"


def test_upload_needs_document_permissions(client, collection):
    staff = User.objects.create_user("viewer", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_collection"))
    client.force_login(staff)
    assert client.get(reverse("admin:indexer_collection_change", args=[collection.pk])).status_code == 200
    assert client.get(upload_url(collection)).status_code == 403
    assert client.post(upload_url(collection), {"files": upload_files()}).status_code == 403
    assert not collection.documents.exists()


def test_collection_list_counts_documents_per_status(admin_client, collection):
    other = Collection.objects.create(name="Other", slug="other")
    for n, status in enumerate(["indexed", "indexed", "indexed", "failed", "queued"]):
        add_doc(collection, f"d{n}", status=status)
    add_doc(other, "x", status="pending")
    response = admin_client.get(reverse("admin:indexer_collection_changelist"))
    rows = {c.slug: c for c in response.context["cl"].result_list}
    papers = rows["papers"]
    assert (papers.count_total, papers.count_indexed, papers.count_failed, papers.count_queued,
            papers.count_pending) == (5, 3, 1, 1, 0)
    assert (rows["other"].count_total, rows["other"].count_pending) == (1, 1)
    html = response.content.decode()
    failed_link = f"?collection__id__exact={collection.pk}&amp;status__exact=failed"
    assert re.search(re.escape(failed_link) + r'">1</a>', html)

    assert admin_client.get(reverse("admin:indexer_collection_add")).status_code == 200
    change = admin_client.get(reverse("admin:indexer_collection_change", args=[collection.pk])).content.decode()
    assert f'href="{upload_url(collection)}"' in change and "Upload documents" in change
    documents = reverse("admin:indexer_document_changelist")
    assert f'<a href="{documents}{failed_link}">Failed: 1</a>' in change
    assert re.search(r'status__exact=indexed">Indexed: 3</a>', change)


def test_document_list_filters_search_and_errors(admin_client, collection):
    other = Collection.objects.create(name="Other", slug="other")
    add_doc(collection, "ok-1")
    add_doc(collection, "bad-1", status="failed", error="Elasticsearch said: mapper_parsing_exception")
    add_doc(other, "bad-2", status="failed", error="other failure")
    url = reverse("admin:indexer_document_changelist")

    def listed(**params):
        response = admin_client.get(url, params)
        assert response.status_code == 200
        return sorted(d.external_id for d in response.context["cl"].result_list), response.content.decode()

    assert listed(collection__id__exact=collection.pk)[0] == ["bad-1", "ok-1"]
    ids, html = listed(collection__id__exact=collection.pk, status__exact="failed")
    assert ids == ["bad-1"] and "mapper_parsing_exception" in html and "Failed" in html
    assert listed(status__exact="failed")[0] == ["bad-1", "bad-2"]
    assert listed(q="ok-1")[0] == ["ok-1"]
    assert listed(q="Title bad")[0] == ["bad-1", "bad-2"]


def test_bulk_actions(admin_client, collection, django_capture_on_commit_callbacks):
    docs = [add_doc(collection, f"d{n}", status=s) for n, s in enumerate(["failed", "indexed", "removed"])]
    url = reverse("admin:indexer_document_changelist")
    selected = [docs[0].pk, docs[2].pk]

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(url, {"action": "reindex", "_selected_action": selected}, follow=True)
    assert "2 document(s) queued for indexing." in response.content.decode()
    assert len(callbacks) == 1
    assert dict(collection.documents.values_list("external_id", "status")) == {
        "d0": "queued", "d1": "indexed", "d2": "queued"}
    assert collection.documents.get(external_id="d0").last_error == ""

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(url, {"action": "remove_from_index", "_selected_action": [docs[1].pk]},
                                     follow=True)
    assert "1 document(s) queued for removal from the index" in response.content.decode()
    # The rows stay; the removal task (indexer/tasks.py) deletes the chunks and sets "removed".
    assert len(callbacks) == 1 and collection.documents.count() == 3


def test_editing_a_document_requeues_it_only_when_its_content_changes(admin_client, collection,
                                                                     django_capture_on_commit_callbacks):
    document = add_doc(collection, "e1")
    url = reverse("admin:indexer_document_change", args=[document.pk])
    form = {"title": document.title, "text": document.text, "source_filename": "", "content_type": "",
            "metadata": "{}"}
    with django_capture_on_commit_callbacks() as callbacks:
        assert admin_client.post(url, form).status_code == 302
    document.refresh_from_db()
    assert callbacks == [] and document.status == "indexed"

    with django_capture_on_commit_callbacks() as callbacks:
        assert admin_client.post(url, {**form, "text": "edited"}).status_code == 302
    document.refresh_from_db()
    assert len(callbacks) == 1 and document.status == "queued"
    assert document.content_hash == Document.compute_hash(document.title, "edited", {})


def test_collection_declares_its_facet_fields_in_the_admin(admin_client, collection):
    url = reverse("admin:indexer_collection_change", args=[collection.pk])
    form = admin_client.get(url).context["adminform"].form
    assert "facet_fields" in form.fields
    data = {name: value for name, value in form.initial.items() if name in form.fields and value is not None
            and not isinstance(value, list)}
    refused = admin_client.post(url, {**data, "facet_fields": "year, not a key"})
    assert refused.status_code == 200 and "Not a metadata key: &#x27;not a key&#x27;" in refused.content.decode()
    collection.refresh_from_db()
    assert collection.facet_fields == ""
    assert admin_client.post(url, {**data, "facet_fields": "year,journal , year"}).status_code == 302
    collection.refresh_from_db()
    assert collection.facet_fields == "year, journal" and collection.facet_keys == ["year", "journal"]


def test_the_collection_list_says_which_model_its_vectors_come_from(admin_client, collection):
    from indexer.models import IndexBuild

    page = admin_client.get("/admin/indexer/collection/").content.decode()
    assert "Vectors from" in page and collection.embedding_model in page
    IndexBuild.objects.create(collection=collection, index_name="x-1", model_id="all-MiniLM-L6-v2", dims=384,
                              status=IndexBuild.Status.LIVE)
    page = admin_client.get("/admin/indexer/collection/").content.decode()
    assert f"all-MiniLM-L6-v2 (rebuild to {collection.embedding_model})" in page
