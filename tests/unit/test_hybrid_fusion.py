"""The hybrid mode's fusion rules (search/hybrid_fusion.py), which rule a collection gets
(search/retrieval.py), and the choice on judged queries (relevance/fusion_choice.py) with its
first-stage lists given here instead of fetched from an engine."""
from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from indexer.models import Collection
from relevance import fusion_choice
from search.apps import settings_problems
from search.hybrid_fusion import LANGUAGE_DEFAULTS, PLAIN_RRF, FusionRule, candidates, fused_scores
from search.retrieval import Hit, collection_fusion, fuse, search_fusion


def order(scores: dict) -> list:
    return sorted(scores, key=lambda key: (-scores[key], key))


SEMANTIC = [("a", 0.91), ("b", 0.90), ("c", 0.60)]
KEYWORD = [("c", 30.0), ("d", 12.0), ("a", 11.0)]


def test_plain_rrf_is_reciprocal_rank_fusion():
    scores = fused_scores(SEMANTIC, KEYWORD, PLAIN_RRF)
    assert scores["a"] == pytest.approx(0.5 / 61 + 0.5 / 63)
    assert scores["d"] == pytest.approx(0.5 / 62)
    # Ranks 1 and 3 against 3 and 1: RRF cannot tell a from c, nor b (2, -) from d (-, 2).
    assert scores["a"] == pytest.approx(scores["c"]) and scores["b"] == pytest.approx(scores["d"])


def test_score_rules_keep_how_far_apart_the_scores_are():
    """RRF sees only ranks: b (a hair under a in the semantic list) ranks with a. Min-max sees
    that c's keyword lead is large and that a and b are level semantically."""
    minmax = fused_scores(SEMANTIC, KEYWORD, FusionRule("minmax", 0.5))
    assert minmax["a"] == pytest.approx(0.5 * 1 + 0.5 * (11 - 11) / 19)
    assert minmax["b"] == pytest.approx(0.5 * (0.90 - 0.60) / 0.31)  # missing from the keyword list: 0 there
    assert minmax["c"] == pytest.approx(0.5 * 0 + 0.5 * 1)
    # The weight moves the order from the keyword list's to the semantic list's.
    assert order(fused_scores(SEMANTIC, KEYWORD, FusionRule("minmax", 0.0)))[:3] == ["c", "d", "a"]
    assert order(fused_scores(SEMANTIC, KEYWORD, FusionRule("minmax", 1.0)))[:3] == ["a", "b", "c"]
    zscore = fused_scores(SEMANTIC, KEYWORD, FusionRule("zscore", 0.5))
    assert zscore["d"] < zscore["c"] and zscore["b"] < zscore["a"]


def test_an_empty_keyword_list_leaves_the_semantic_order():
    for rule in (PLAIN_RRF, FusionRule("minmax", 0.65), FusionRule("zscore", 0.4)):
        assert order(fused_scores(SEMANTIC, [], rule)) == ["a", "b", "c"]


@pytest.mark.parametrize("text, message", [
    ("minmax", "method:weight"), ("softmax:0.5", "method must be one of"), ("minmax:1.5", "between 0 and 1"),
    ("rrf:0.5:0", "k must be 1 or more"), ("zscore:0.5:60", "method:weight"), ("minmax:half", "fusion rule"),
])
def test_bad_rules_are_refused_with_a_reason(text, message):
    with pytest.raises(ValueError, match=message):
        FusionRule.parse(text)


def test_a_rule_survives_its_text_and_its_record():
    for rule in candidates():
        assert FusionRule.from_dict(rule.to_dict()) == rule
    assert FusionRule.parse("rrf:0.5:60") == PLAIN_RRF
    assert FusionRule.parse("minmax:0.65") == LANGUAGE_DEFAULTS["en"]


def test_a_bad_setting_stops_the_start(settings):
    settings.SEARCH_HYBRID_FUSION = "minmax:2"
    assert settings_problems() == ["SEARCH_HYBRID_FUSION: fusion rule 'minmax:2': fusion weight must be between 0 "
                                   "and 1 (the semantic "
                                   "list's share), not 2.0"]
    settings.SEARCH_HYBRID_FUSION = "zscore:0.3"
    assert settings_problems() == []
    from common.settings_checks import install

    settings.SEARCH_HYBRID_FUSION = "nonsense"
    with pytest.raises(ImproperlyConfigured, match="SEARCH_HYBRID_FUSION"):
        install(settings_problems, "search-test")


def test_which_rule_a_collection_gets(settings):
    settings.SEARCH_HYBRID_FUSION = ""
    plain = Collection(slug="plain", language="en")
    assert collection_fusion(plain, "bge-small-en-v1.5", "en") == (LANGUAGE_DEFAULTS["en"], "language default")
    assert collection_fusion(plain, "bge-small-zh-v1.5", "zh") == (LANGUAGE_DEFAULTS["zh"], "language default")
    chosen = Collection(slug="chosen", language="en",
                        hybrid_fusion={"rule": {"method": "rrf", "weight": 0.6, "k": 10}, "model": "bge-small-en-v1.5"})
    assert collection_fusion(chosen, "bge-small-en-v1.5", "en") == (FusionRule("rrf", 0.6, 10), "collection")
    # Chosen for other vectors: a rebuild with another model went live since.
    assert collection_fusion(chosen, "all-MiniLM-L6-v2", "en")[1] == "language default"
    settings.SEARCH_HYBRID_FUSION = "rrf:0.5:60"
    assert collection_fusion(plain, "bge-small-en-v1.5", "en") == (PLAIN_RRF, "setting")
    assert collection_fusion(chosen, "bge-small-en-v1.5", "en")[1] == "collection"
    # Collections searched together: one rule, theirs only when they agree.
    assert search_fusion({"a": (PLAIN_RRF, "setting"), "b": (PLAIN_RRF, "collection")}) == (PLAIN_RRF, "collection/setting")
    assert search_fusion({"a": (PLAIN_RRF, "setting"), "b": (FusionRule("zscore", 0.4), "language default")})[1] \
        == "collections differ: mixed default"


def hit(chunk_id: str, score: float, document_id: int) -> Hit:
    return Hit(id=chunk_id, collection="c", document_id=document_id, external_id=chunk_id, title="", text="",
               chunk=0, start=0, end=0, metadata={}, score=score)


def test_fuse_keeps_each_hits_ranks_and_scores_it_by_the_rule():
    semantic = [hit(key, score, n) for n, (key, score) in enumerate(SEMANTIC)]
    keyword = [hit(key, score, {"a": 0, "c": 2, "d": 3}[key]) for key, score in KEYWORD]
    fused = fuse(semantic, keyword, FusionRule("minmax", 0.5), depth=3)
    assert [h.id for h in fused] == ["a", "c", "b"]
    by_id = {h.id: h for h in fused}
    assert (by_id["a"].semantic_rank, by_id["a"].keyword_rank) == (1, 3)
    assert (by_id["b"].semantic_rank, by_id["b"].keyword_rank) == (2, None)
    assert by_id["c"].score == pytest.approx(0.5)


def lists_where_semantic_is_right(n: int) -> dict[str, fusion_choice.QueryLists]:
    """Per query: its relevant document is first semantically and tenth by keyword."""
    lists = {}
    for q in range(n):
        relevant = f"rel{q}"
        semantic = [(f"{relevant}/0", 0.9)] + [(f"s{q}-{i}/0", 0.5 - i * 0.01) for i in range(20)]
        keyword = [(f"k{q}-{i}/0", 20.0 - i) for i in range(9)] + [(f"{relevant}/0", 10.5)]
        documents = {chunk: chunk.split("/")[0] for chunk, _ in semantic + keyword}
        lists[f"q{q}"] = fusion_choice.QueryLists(semantic=semantic, keyword=keyword, documents=documents)
    return lists


@pytest.mark.django_db
def test_a_rule_that_beats_the_default_out_of_fold_is_recorded_with_its_model(monkeypatch, settings):
    settings.SEARCH_HYBRID_FUSION = "minmax:0.1"  # a default that trusts the keyword list
    collection = Collection.objects.create(name="Fusion", slug="fusion", language="en")
    queries = {f"q{q}": f"query {q}" for q in range(24)}
    qrels = {f"q{q}": {f"rel{q}": 1} for q in range(24)}
    monkeypatch.setattr(fusion_choice, "fetch_lists", lambda c, judged, depth, progress: lists_where_semantic_is_right(24))
    choice = fusion_choice.choose_fusion(collection, queries, qrels)
    assert choice.recorded and choice.default == FusionRule("minmax", 0.1)
    assert choice.cross_validated == pytest.approx(1.0) and choice.default_ndcg < 0.5
    collection.refresh_from_db()
    assert collection.hybrid_fusion["model"] == collection.embedding_model == "bge-small-en-v1.5"
    assert FusionRule.from_dict(collection.hybrid_fusion["rule"]) == choice.rule
    assert collection_fusion(collection, "bge-small-en-v1.5", "en") == (choice.rule, "collection")


@pytest.mark.django_db
def test_no_rule_is_recorded_when_the_default_is_as_good(monkeypatch, settings):
    settings.SEARCH_HYBRID_FUSION = "minmax:0.9"  # already right
    collection = Collection.objects.create(name="Fusion2", slug="fusion2", language="en")
    queries = {f"q{q}": f"query {q}" for q in range(24)}
    qrels = {f"q{q}": {f"rel{q}": 1} for q in range(24)}
    monkeypatch.setattr(fusion_choice, "fetch_lists", lambda c, judged, depth, progress: lists_where_semantic_is_right(24))
    choice = fusion_choice.choose_fusion(collection, queries, qrels)
    assert not choice.recorded and "not recorded" in choice.summary
    collection.refresh_from_db()
    assert collection.hybrid_fusion == {}


@pytest.mark.django_db
def test_too_few_judged_queries_is_a_clear_error():
    collection = Collection.objects.create(name="Few", slug="few", language="en")
    with pytest.raises(ValueError, match="3 judged queries; choosing a fusion rule needs at least 20"):
        fusion_choice.choose_fusion(collection, {"a": "x", "b": "y", "c": "z"}, {"a": {}, "b": {}, "c": {}})
