"""search/facets.py without Elasticsearch: the aggregation body and the reading of its answer
(the counts themselves are checked against Elasticsearch in tests/integration/test_facets.py)."""
from __future__ import annotations

from types import SimpleNamespace

from search.facets import FacetRequest, facet_body, facet_keys, parse_facets


def request(**overrides) -> FacetRequest:
    values = dict(scope=[SimpleNamespace(slug="b"), SimpleNamespace(slug="a")], requested=["a"],
                  metadata={"kind": ["review"]}, keys=["kind", "year"])
    values.update(overrides)
    return FacetRequest(**values)


def test_each_facet_filters_by_the_other_choices_only():
    body = facet_body(request(), match={"match": {"text": "q"}})
    assert body["size"] == 0
    assert body["query"] == {"bool": {"filter": [{"terms": {"collection": ["a", "b"]}}],
                                      "must": [{"match": {"text": "q"}}]}}
    collection, kind, year = (body["aggs"][f"f{i}"] for i in range(3))
    assert collection["filter"] == {"bool": {"filter": [{"terms": {"metadata.kind": ["review"]}}]}}
    assert kind["filter"] == {"bool": {"filter": [{"terms": {"collection": ["a"]}}]}}
    assert year["filter"] == {"bool": {"filter": [{"terms": {"collection": ["a"]}},
                                                  {"terms": {"metadata.kind": ["review"]}}]}}
    assert year["aggs"]["values"]["terms"]["field"] == "metadata.year"
    # Documents, not chunks.
    assert year["aggs"]["values"]["aggs"]["documents"]["cardinality"]["field"] == "document_id"


def test_without_a_match_every_document_in_scope_counts():
    assert "must" not in facet_body(request(), match=None)["query"]["bool"]


def test_the_answer_is_read_with_the_choices_marked_and_a_chosen_value_kept_at_zero():
    def buckets(*pairs):
        return {"values": {"buckets": [{"key": k, "doc_count": 99, "documents": {"value": n}} for k, n in pairs]}}

    answer = {"aggregations": {"f0": buckets(("a", 3), ("b", 1)), "f1": buckets(("study", 2)),
                               "f2": buckets((2020, 1))}}
    facets = parse_facets(request(), answer)
    assert facets["counts"] == "documents"
    assert facets["collection"] == [{"value": "a", "documents": 3, "selected": True},
                                    {"value": "b", "documents": 1, "selected": False}]
    assert facets["metadata"]["kind"] == [{"value": "study", "documents": 2, "selected": False},
                                          {"value": "review", "documents": 0, "selected": True}]
    assert facets["metadata"]["year"] == [{"value": "2020", "documents": 1, "selected": False}]


def test_no_facet_search_gives_empty_facets_with_the_choices():
    facets = parse_facets(request(requested=[], metadata={}), None)
    assert facets == {"counts": "documents", "collection": [], "metadata": {"kind": [], "year": []}}


def test_facet_keys_are_the_union_in_declaration_order():
    collections = [SimpleNamespace(facet_keys=["year", "kind"]), SimpleNamespace(facet_keys=["kind", "journal"])]
    assert facet_keys(collections) == ["year", "kind", "journal"]
