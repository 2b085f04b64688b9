"""The document page (/documents/<id>, search/documents.py) through the real index: the chunks
shown are those Elasticsearch holds, the matched one marked in the text; access like a search."""
from __future__ import annotations

import pytest

from indexer.models import Collection, Document
from tests.support.searching import add_documents, drop_collections, index_now, long_text

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def corpus(es, django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        public = Collection.objects.create(name="Doc public", slug="d-public", chunk_size=48, chunk_overlap=8,
                                           visibility=Collection.Visibility.PUBLIC)
        private = Collection.objects.create(name="Doc private", slug="d-private",
                                            visibility=Collection.Visibility.GROUPS)
        add_documents(public, [("long", "Telomere biology <b>over</b> sections", long_text("telomerase activity"),
                                {"year": 2020, "journal": "Cell"})])
        add_documents(private, [("memo", "Private memo", "Internal memo on telomerase.", {})])
        index_now(es, public, private)
        yield {"public": Document.objects.get(external_id="long"), "private": Document.objects.get(external_id="memo")}
        drop_collections(es, public, private)


def indexed(es, document) -> list[dict]:
    from indexer.store import alias_name

    hits = es.search(index=alias_name(document.collection.slug), size=1000, sort=[{"chunk": "asc"}],
                     query={"term": {"document_id": document.pk}})["hits"]["hits"]
    return [h["_source"] for h in hits]


def test_the_page_shows_the_indexed_chunks_and_marks_the_matched_one(client, es, corpus):
    document = corpus["public"]
    chunks = indexed(es, document)
    assert len(chunks) > 3
    chosen = chunks[2]
    page = client.get(f"/documents/{document.pk}", {"chunk": chosen["chunk"]})
    assert page.status_code == 200
    view = page.context["view"]
    assert [(c.number, c.start, c.end, c.text) for c in view.chunks] == [
        (c["chunk"], c["start"], c["end"], c["text"]) for c in chunks]
    assert view.parts == (document.text[:chosen["start"]], chosen["text"], document.text[chosen["end"]:])
    html = page.content.decode()
    assert f'<mark id="matched">{chosen["text"]}</mark>' in html
    assert "Telomere biology &lt;b&gt;over&lt;/b&gt; sections" in html  # escaped, never markup
    assert "journal" in html and "Cell" in html and "Indexed" in html
    assert "Edit in the admin" not in html


def test_results_link_to_the_document_page_at_their_chunk(client, corpus, settings):
    settings.RERANKER_MODEL = ""
    results = client.get("/api/search", {"q": "telomerase activity", "mode": "keyword", "group": "off"}).json()["results"]
    assert results
    for result in results:
        assert result["url"] == f"/documents/{result['document_id']}?chunk={result['chunk']}"
        assert client.get(result["url"]).context["view"].chunk.number == result["chunk"]


def test_a_private_document_is_a_404_for_whoever_may_not_see_it(client, corpus, django_user_model):
    from django.contrib.auth.models import Group

    private = corpus["private"]
    missing = client.get("/documents/987654321")
    assert missing.status_code == 404
    anonymous = client.get(f"/documents/{private.pk}")
    assert anonymous.status_code == 404 and anonymous.content == missing.content
    outsider = django_user_model.objects.create_user("outsider")
    client.force_login(outsider)
    assert client.get(f"/documents/{private.pk}").status_code == 404
    # Staff who are not in the group do not see it either: access is the collection's.
    staff = django_user_model.objects.create_user("staffer", is_staff=True)
    client.force_login(staff)
    assert client.get(f"/documents/{private.pk}").status_code == 404
    group = Group.objects.create(name="d-readers")
    private.collection.groups.add(group)
    staff.groups.add(group)
    page = client.get(f"/documents/{private.pk}")
    assert page.status_code == 200 and "Private memo" in page.content.decode()
    assert "Edit in the admin" in page.content.decode()


def test_bad_chunk_parameters_get_a_clear_answer(client, corpus):
    document = corpus["public"]
    bad = client.get(f"/documents/{document.pk}", {"chunk": "two"})
    assert bad.status_code == 400 and "chunk must be a whole number" in bad.content.decode()
    absent = client.get(f"/documents/{document.pk}", {"chunk": 9999})
    assert absent.status_code == 404 and "This document has no indexed chunk 9999." in absent.content.decode()


def test_an_edited_document_is_not_marked_at_stale_offsets(client, es, corpus):
    document = corpus["public"]
    chunk = indexed(es, document)[1]
    Document.objects.filter(pk=document.pk).update(text="Rewritten. " + document.text)
    page = client.get(f"/documents/{document.pk}", {"chunk": chunk["chunk"]})
    html = page.content.decode()
    assert page.status_code == 200 and "changed since it was indexed" in html
    assert f'<mark id="matched">{chunk["text"]}</mark>' in html  # shown as indexed, below the text
    assert page.context["view"].parts[1] == ""
