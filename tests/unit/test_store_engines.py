"""What the two stores of indexer/store.py ask of their engines, checked without one (the
integration suite runs the same store methods against both: tests/integration/conftest.py)."""
from __future__ import annotations

import pytest

from indexer.store import (ElasticsearchStore, OpenSearchStore, chunk_mapping, get_store,
                           opensearch_chunk_mapping)


@pytest.mark.parametrize("index_options", OpenSearchStore.index_option_types)
def test_opensearch_vectors_always_name_the_lucene_engine(index_options):
    # The plugin's default engine (faiss) kills a node whose plugin lacks its native libraries.
    embedding = opensearch_chunk_mapping(384, index_options, "en")["properties"]["embedding"]
    assert embedding["type"] == "knn_vector" and embedding["dimension"] == 384
    assert embedding["method"]["engine"] == "lucene" and embedding["method"]["space_type"] == "cosinesimil"


def test_opensearch_refuses_bbq_and_both_keep_the_same_fields():
    with pytest.raises(ValueError, match="on OpenSearch"):
        opensearch_chunk_mapping(384, "bbq_hnsw", "en")
    es, os_ = chunk_mapping(384, "hnsw", "zh"), opensearch_chunk_mapping(384, "hnsw", "zh")
    assert set(es["properties"]) == set(os_["properties"]) and es["_source"] == os_["_source"]
    assert os_["properties"]["metadata"] == {"type": "object", "dynamic": True}
    assert {t["mapping"]["type"] for rule in os_["dynamic_templates"] for t in rule.values()} == {"keyword"}


def test_knn_bodies_carry_the_filters_inside_the_vector_search():
    filters = [{"terms": {"collection": ["a"]}}]
    es = ElasticsearchStore().knn_search_body([0.6, 0.8], k=10, num_candidates=5, filters=filters)
    assert es == {"knn": {"field": "embedding", "query_vector": [0.6, 0.8], "k": 10, "num_candidates": 10,
                          "filter": filters}}
    os_ = OpenSearchStore().knn_search_body([0.6, 0.8], k=10, num_candidates=200, filters=filters)
    assert os_ == {"query": {"knn": {"embedding": {"vector": [0.6, 0.8], "k": 10, "filter": {"bool": {"filter": filters}},
                                                   "method_parameters": {"ef_search": 200}}}}}


def test_the_store_follows_search_engine(settings):
    get_store.cache_clear()
    try:
        settings.SEARCH_ENGINE = "opensearch"
        assert isinstance(get_store(), OpenSearchStore)
        get_store.cache_clear()
        settings.SEARCH_ENGINE = "elasticsearch"
        assert isinstance(get_store(), ElasticsearchStore)
    finally:
        get_store.cache_clear()

