"""Keyword analysis and highlights (indexer/analysis.py) and the queries built from them, without
any service (like every unit test). The same behaviour through the real Elasticsearch:
tests/integration/test_languages.py."""
from __future__ import annotations

import re

import pytest

from indexer.analysis import (HIGHLIGHT_END, HIGHLIGHT_START, LANGUAGES, UnknownLanguage, analyze, check_language,
                              highlight, index_terms, query_terms)


def marked(text: str) -> list[str]:
    """The marked words of a highlighted text."""
    words, rest = [], text
    while HIGHLIGHT_START in rest:
        rest = rest.split(HIGHLIGHT_START, 1)[1]
        word, rest = rest.split(HIGHLIGHT_END, 1)
        words.append(word)
    return words


def show(text: str) -> str:
    return text.replace(HIGHLIGHT_START, "[").replace(HIGHLIGHT_END, "]")


# --------------------------------------------------------------------------- English


def test_english_stems_and_drops_stop_words_alike_at_index_and_query_time():
    assert query_terms("study run horse", "en") == ["studi", "run", "hors"]
    assert set(query_terms("study run horse", "en")) <= set(analyze("The studied running horses", "en"))
    assert analyze("The effect of a drug on the cells", "en") == ["effect", "drug", "cell"]
    # Possessives, apostrophes, numbers with separators, hyphens as the standard tokenizer splits them.
    assert analyze("The patient's IL-6 rose 1.5-fold in 3,000 cells; don't", "en") == [
        "patient", "il", "6", "rose", "1.5", "fold", "3,000", "cell", "don't"]
    assert query_terms("the of and a", "en") == []  # only stop words: no term, no keyword match
    assert query_terms("cells cell CELLS", "en") == ["cell"]


def test_terms_are_space_free_for_the_whitespace_analyzer():
    text = "Tab\tseparated\u00a0words, new\nlines and 中文 混合 text"
    for language in ("en", "zh"):
        terms = analyze(text, language)
        assert terms and all(term.strip() and not any(ch.isspace() for ch in term) for term in terms)
        assert index_terms(text, language).split(" ") == terms


def test_highlight_marks_the_surface_word_never_a_stop_word():
    terms = set(query_terms("the effects of running on a horse", "en"))
    text = "The effect of running: a horse that runs is one of the horses studied."
    result = highlight(text, terms, "en")
    assert marked(result) == ["effect", "running", "horse", "runs", "horses"]
    assert result.replace(HIGHLIGHT_START, "").replace(HIGHLIGHT_END, "") == text
    for stop in ("The", "of", "a", "the", "is"):
        assert stop not in marked(result)


def test_highlight_picks_the_passage_with_the_query_words():
    filler = "Unrelated sentence about the weather and the sea. " * 12
    text = filler + "Horses that studied running were faster. " + filler
    result = highlight(text, set(query_terms("study run horse", "en")), "en")
    assert marked(result) == ["Horses", "studied", "running"]
    assert result.startswith(f"{HIGHLIGHT_START}Horses")  # the sentence of the match
    assert len(result.replace(HIGHLIGHT_START, "").replace(HIGHLIGHT_END, "")) <= 300
    # No match: the beginning, cut at a word; short texts and titles whole.
    start = highlight(text, {"zebra"}, "en")
    assert text.startswith(start) and len(start) <= 300 and start.endswith("sea.") and text[len(start)] == " "
    assert highlight("Short text", {"zebra"}, "en") == "Short text"
    title = "A long title about horses " * 20
    assert len(marked(highlight(title, {"hors"}, "en", fragment_chars=None))) == 20


PROSE = ("The patients' IL-6 levels rose 1.5-fold; 3,000 cells were dying, lying or tying. Studies of flies "
         "and skies: generously, relational organisations re-studied happiness (p53, NF-κB, T_cells, x2). "
         "It's don't won't O'Brien's studying restudied 5 15 51 1 1.5 a an the of 医学DNA naïve Ünïcode")


@pytest.mark.parametrize("language", ["en", "none"])
def test_highlight_finds_exactly_the_words_the_analysis_matches(language):
    """Highlights look only at candidate words (a shortcut); they must mark exactly the words whose
    index term is a query term, as analyzing every word would."""
    from indexer.analysis import _matches, tokens

    words = {m for m in re.findall(r"\S+", PROSE)} | {"study", "die", "lie", "tie", "fly", "sky", "is", "1", "5"}
    # The last text lowercases to a longer string ("İ" is two characters then): every word is analyzed.
    for text in (PROSE, PROSE + " İstanbul"):
        for query in sorted(words):
            terms = frozenset(query_terms(query, language))
            every_word = [(t.start, t.end) for t in tokens(text, language) if set(t.forms) & terms]
            assert [(start, end) for start, end, _ in _matches(text, terms, language)] == every_word, query


def test_highlight_drops_mark_characters_found_in_the_text():
    text = f"stray {HIGHLIGHT_START}marks{HIGHLIGHT_END}{HIGHLIGHT_END} around horses"
    result = highlight(text, {"hors", "mark"}, "en")
    assert show(result) == "stray [marks] around [horses]"


# --------------------------------------------------------------------------- Chinese


def test_chinese_is_segmented_into_words():
    assert query_terms("医学", "zh") == ["医学"]
    assert "医学" in analyze("我们研究医学和生物学", "zh")
    assert "医学" not in analyze("医生学习新的手术技术", "zh")  # 医 and 学 are in two other words
    # The index also holds the dictionary words inside a longer word (search mode)...
    assert {"生物", "生物学"} <= set(analyze("我们研究医学和生物学", "zh"))
    # ...and a few particles are dropped.
    assert "的" not in analyze("医生学习新的手术技术", "zh") and "和" not in analyze("医学和生物学", "zh")
    assert query_terms("DNA 复制", "zh") == ["dna", "复制"]


def test_chinese_highlights_whole_words():
    text = "我们研究医学和生物学。医生学习新的手术技术。"
    assert marked(highlight(text, set(query_terms("医学", "zh")), "zh")) == ["医学"]
    # A query word inside a longer word marks the whole word.
    assert marked(highlight(text, set(query_terms("生物", "zh")), "zh")) == ["生物学"]
    assert marked(highlight(text, set(query_terms("手术", "zh")), "zh")) == ["手术"]


# --------------------------------------------------------------------------- none and codes


def test_none_is_the_standard_analyzer():
    assert analyze("The Effects of running", "none") == ["the", "effects", "of", "running"]
    assert analyze("医学", "none") == ["医", "学"]  # one token per character, as before languages
    result = highlight("The effect of running", set(query_terms("effect of", "none")), "none")
    assert marked(result) == ["effect", "of"]


def test_unknown_language_lists_the_valid_ones():
    assert check_language("zh") == "zh"
    with pytest.raises(UnknownLanguage) as raised:
        check_language("klingon")
    message = str(raised.value)
    assert "'klingon'" in message and all(code in message for code in LANGUAGES)
    with pytest.raises(UnknownLanguage):
        analyze("text", "xx")


# --------------------------------------------------------------------------- mapping and query


def test_mapping_has_terms_fields_only_for_analyzed_languages():
    from indexer.store import TERMS_SIMILARITY, chunk_mapping, index_settings

    en = chunk_mapping(384, "hnsw", "en")
    assert en["properties"]["text_terms"]["analyzer"] == "whitespace"
    assert en["properties"]["title_terms"]["similarity"] == TERMS_SIMILARITY
    assert en["_source"] == {"excludes": ["title_terms", "text_terms"]}
    assert en["properties"]["text"]["analyzer"] == "standard"  # `none` queries still work on it
    none = chunk_mapping(384, "hnsw", "none")
    assert "text_terms" not in none["properties"] and "_source" not in none
    assert TERMS_SIMILARITY in index_settings()["similarity"]
    with pytest.raises(UnknownLanguage):
        chunk_mapping(384, "hnsw", "fr")


def test_keyword_query_per_language():
    from search.retrieval import keyword_query

    one = keyword_query("studied running horses", {"a": "en", "b": "en"})
    assert one["multi_match"]["query"] == "studi run hors"
    assert one["multi_match"]["fields"] == ["title_terms", "text_terms"]
    # The form measured best on train (bench/keyword_query.py, docs/keyword-search.md).
    assert (one["multi_match"]["type"], one["multi_match"]["tie_breaker"]) == ("best_fields", 0.3)
    none = keyword_query("studied running horses", {"a": "none"})
    assert none["multi_match"]["query"] == "studied running horses"
    assert none["multi_match"]["fields"] == ["title", "text"]
    mixed = keyword_query("医学 horses", {"a": "en", "b": "zh", "c": "en"})
    clauses = mixed["bool"]["should"]
    assert [c["bool"]["filter"] for c in clauses] == [[{"terms": {"collection": ["a", "c"]}}],
                                                      [{"terms": {"collection": ["b"]}}]]
    assert [c["bool"]["must"][0]["multi_match"]["query"] for c in clauses] == ["医 学 hors", "医学 horses"]
    # A language left without terms drops out, keeping the other's filter; none left: no query.
    # (的 is a Chinese stop word, and an ideograph of its own in English.)
    only_en = keyword_query("的", {"a": "en", "b": "zh"})
    assert only_en["bool"]["should"][0]["bool"]["filter"] == [{"terms": {"collection": ["a"]}}]
    assert keyword_query("the of", {"a": "en"}) is None
