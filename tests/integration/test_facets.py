"""Facets through the real stack: counts from Elasticsearch aggregations in the search's own
msearch, access-filtered, in the API and on the page alike (search/facets.py)."""
from __future__ import annotations

import pytest

from indexer.store import alias_name
from indexer.models import Collection
from tests.support.searching import SCIENCE, add_documents, drop_collections, index_now, long_text

pytestmark = pytest.mark.django_db
QUERY = "telomerase activity of stem cells"


@pytest.fixture(scope="module")
def corpus(es, django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        sci = Collection.objects.create(name="Facet sci", slug="f-sci", chunk_size=48, chunk_overlap=8,
                                        facet_fields="kind, year",
                                        visibility=Collection.Visibility.PUBLIC)
        other = Collection.objects.create(name="Facet other", slug="f-other", facet_fields="kind",
                                          visibility=Collection.Visibility.PUBLIC)
        private = Collection.objects.create(name="Facet private", slug="f-private",
                                            visibility=Collection.Visibility.AUTHENTICATED, facet_fields="secret")
        add_documents(sci, [(f"sci{i}", title, text, {"year": str(2020 + i % 2), "kind": "review" if i % 4 == 0 else "study"})
                            for i, (title, text) in enumerate(SCIENCE)]
                      + [("long", "Telomere biology over many sections", long_text("telomerase activity"),
                          {"year": "2020", "kind": "study"})])
        add_documents(other, [("o1", "Telomerase in cancer", "Cancer cells reactivate telomerase activity.", {"kind": "note"}),
                              ("o2", "Glucose sensing", "Beta cells sense glucose.", {"kind": "note"})])
        add_documents(private, [("p1", "Telomerase memo", "Memo on telomerase activity in stem cells.",
                                 {"secret": "yes", "kind": "memo"})])
        index_now(es, sci, other, private)
        yield {"sci": sci, "other": other, "private": private}
        drop_collections(es, sci, other, private)


def documents_matching(es, slugs: list[str], field: str | None = None, value: str | None = None,
                       extra: list[dict] = ()) -> int:
    """Distinct documents whose text has the query's words (the BM25 clause of the search), counted
    independently of the facets' code: every matching chunk read back and its document ids counted."""
    from indexer.lookups import serving
    from search.retrieval import keyword_query

    languages = {slug: serving(Collection.objects.get(slug=slug))[1] for slug in slugs}
    filters = [{"terms": {"collection": slugs}}, *extra]
    if field:
        filters.append({"term": {field: value}})
    response = es.search(index=",".join(alias_name(s) for s in slugs), size=1000, _source=["document_id"],
                         query={"bool": {"must": [keyword_query(QUERY, languages)], "filter": filters}})
    return len({hit["_source"]["document_id"] for hit in response["hits"]["hits"]})


def by_value(values: list[dict]) -> dict[str, int]:
    return {v["value"]: v["documents"] for v in values}


def test_api_returns_document_counts_per_collection_and_facetable_field(client, es, corpus, settings):
    settings.RERANKER_MODEL = ""  # facets do not depend on the second stage
    body = client.get("/api/search", {"q": QUERY, "mode": "keyword"}).json()
    facets = body["facets"]
    assert facets["counts"] == "documents"
    # A visitor: the private collection is neither counted nor named, nor its facetable key.
    assert by_value(facets["collection"]) == {"f-sci": documents_matching(es, ["f-sci"]),
                                              "f-other": documents_matching(es, ["f-other"])}
    assert set(facets["metadata"]) == {"kind", "year"}
    expected_kind = {value: documents_matching(es, ["f-other", "f-sci"], "metadata.kind", value)
                     for value in ("review", "study", "note")}
    assert by_value(facets["metadata"]["kind"]) == {v: n for v, n in expected_kind.items() if n}
    assert by_value(facets["metadata"]["year"]) == {
        y: documents_matching(es, ["f-other", "f-sci"], "metadata.year", y) for y in ("2020", "2021")
        if documents_matching(es, ["f-other", "f-sci"], "metadata.year", y)}
    assert not any(v["selected"] for v in facets["collection"] + facets["metadata"]["kind"])


def test_a_facet_counts_the_other_choices_not_its_own(client, es, corpus, settings):
    settings.RERANKER_MODEL = ""
    body = client.get("/api/search", {"q": QUERY, "mode": "keyword", "collection": "f-sci", "meta.kind": "review"}).json()
    facets = body["facets"]
    # The collection facet ignores the collection choice but keeps the kind filter...
    review = [{"term": {"metadata.kind": "review"}}]
    assert by_value(facets["collection"]) == {"f-sci": documents_matching(es, ["f-sci"], extra=review)}
    assert [v["value"] for v in facets["collection"] if v["selected"]] == ["f-sci"]
    # ...the kind facet ignores the kind choice but keeps the collection; `year` keeps both.
    assert by_value(facets["metadata"]["kind"]) == {
        k: documents_matching(es, ["f-sci"], "metadata.kind", k) for k in ("review", "study")}
    assert by_value(facets["metadata"]["year"]) == {
        y: n for y in ("2020", "2021") if (n := documents_matching(es, ["f-sci"], "metadata.year", y, extra=review))}
    # Every result is what the filters say.
    assert body["results"] and {r["metadata"]["kind"] for r in body["results"]} == {"review"}


def test_a_signed_in_user_counts_the_collection_they_may_see(client, es, corpus, settings, django_user_model):
    settings.RERANKER_MODEL = ""
    client.force_login(django_user_model.objects.create_user("reader"))
    facets = client.get("/api/search", {"q": QUERY, "mode": "keyword"}).json()["facets"]
    assert by_value(facets["collection"])["f-private"] == 1
    assert by_value(facets["metadata"]["secret"]) == {"yes": 1}


def test_semantic_facets_count_every_document_in_scope(client, corpus, settings):
    settings.RERANKER_MODEL = ""
    facets = client.get("/api/search", {"q": QUERY, "mode": "semantic"}).json()["facets"]
    assert by_value(facets["collection"]) == {"f-sci": len(SCIENCE) + 1, "f-other": 2}


def test_the_page_keeps_every_filter_in_the_form_and_the_facet_links(client, corpus, settings):
    settings.RERANKER_MODEL = ""
    page = client.get("/", {"q": QUERY, "mode": "keyword", "meta.kind": "study", "k": "3", "group": "off"})
    html = page.content.decode()
    assert page.status_code == 200
    assert '<input type="hidden" name="meta.kind" value="study">' in html
    assert '<option value="3" selected>' in html
    assert '<option value="off" selected>every matching passage</option>' in html
    # Choosing a year keeps the kind filter, the size and the grouping, and goes to page 1.
    link = next(v["url"] for f in page.context["facets"]["metadata"] if f["key"] == "year" for v in f["values"])
    assert "meta.kind=study" in link and "k=3" in link and "group=off" in link and "page=" not in link
    # "clear these filters" drops the metadata filters only.
    clear = page.context["clear_filters_url"]
    assert "meta." not in clear and "k=3" in clear and "group=off" in clear and "mode=keyword" in clear


def test_facet_fields_are_checked_in_the_admin_form():
    from django.core.exceptions import ValidationError

    collection = Collection(name="Checked", slug="checked", facet_fields="year,  journal , year")
    collection.clean()
    assert collection.facet_fields == "year, journal" and collection.facet_keys == ["year", "journal"]
    with pytest.raises(ValidationError, match="Not a metadata key"):
        Collection(name="Bad", slug="bad", facet_fields="year, a b").clean()
