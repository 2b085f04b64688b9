"""Pseudo-queries other than titles (relevance/pseudo_queries.py): a document without a usable
title gives its leading sentence (the positive passage is the text after it), else its key
terms (words other documents use too, in text order); none at all when nothing reads like a
query; the kinds asked for, in their order."""
from __future__ import annotations

import pytest

from relevance.pseudo_queries import KeyTerms, leading_sentence, pseudo_queries
from reranker.training import JudgedQuery, query_kinds

TELOMERES = ("Telomeres shorten with every division of human cells. Stem cells keep them long through "
             "telomerase, an enzyme that adds repeats to the chromosome ends.")
ROWS = [
    ("titled", "Telomerase activity in adult stem cells", "Stem cells keep telomeres long. They divide often."),
    ("sentence", "scan_0001.pdf", TELOMERES),
    ("terms", "", "insulin glucose diabetes blood pancreas"),   # no sentence end: no leading sentence
    ("a", "", "Insulin and glucose in diabetes; the pancreas and the blood"),
    ("b", "", "Cars and roads"),
    ("c", "", "Engines burn fuel"),
    ("d", "", "Rivers flow to the sea"),
    ("e", "", "Mountains rise slowly"),
]


def test_leading_sentence_and_the_text_after_it():
    assert leading_sentence(TELOMERES, "en") == (
        "Telomeres shorten with every division of human cells.",
        "Stem cells keep them long through telomerase, an enzyme that adds repeats to the chromosome ends.")
    assert leading_sentence("细胞每次分裂端粒都会缩短。干细胞通过端粒酶保持端粒的长度，这种酶在染色体末端添加重复序列，研究人员对此进行了研究。",
                            "zh")[0] == "细胞每次分裂端粒都会缩短。"


@pytest.mark.parametrize("text", [
    "Too short. Stem cells keep them long through telomerase, an enzyme that adds repeats to ends.",
    "Telomeres shorten with every division of human cells. Little follows.",           # too little after it
    "2020-01-05 12:00 13/44 99 ref 17. Stem cells keep them long through telomerase, an enzyme here.",
    "No sentence end at all in this text about telomeres and stem cells and more",
])
def test_no_leading_sentence_where_it_does_not_read_like_a_query(text):
    assert leading_sentence(text, "en") is None


def test_key_terms_skip_words_no_other_document_has_and_keep_text_order():
    key_terms = KeyTerms([text for _, _, text in ROWS], "en")
    # "insulin glucose diabetes blood pancreas": each word is in one other document (df 2 of 8).
    assert key_terms.of("insulin glucose diabetes blood pancreas") == "insulin glucose diabetes blood pancreas"
    # The highest tf-idf (insulin twice; the others tie, broken by term), then in text order.
    assert key_terms.of("pancreas glucose insulin Insulin diabetes blood", count=3) == "insulin diabetes blood"
    assert key_terms.of("Cars and roads") is None               # no word of it elsewhere


def test_one_query_per_document_of_the_first_kind_it_can_give():
    made = {q.external_id: q for q in pseudo_queries(ROWS, "en")}
    assert (made["titled"].kind, made["titled"].query) == ("title", "Telomerase activity in adult stem cells")
    assert (made["sentence"].kind, made["sentence"].query) == ("sentence",
                                                               "Telomeres shorten with every division of human cells.")
    assert made["sentence"].passage.startswith("Stem cells keep them long") and "shorten" not in made["sentence"].passage
    assert made["terms"].kind == "terms" and made["terms"].passage == ROWS[2][2]
    assert set(made) == {"titled", "sentence", "terms", "a"}
    assert query_kinds([JudgedQuery(q.query, {}, [], kind=q.kind) for q in made.values()]) == \
        "2 terms, 1 sentence, 1 title"


def test_the_kinds_asked_for_in_their_order():
    titles_only = pseudo_queries(ROWS, "en", ("title",))
    assert [q.external_id for q in titles_only] == ["titled"]
    sentence_first = {q.external_id: q.kind for q in pseudo_queries(ROWS, "en", ("sentence", "title"))}
    assert sentence_first == {"titled": "title", "sentence": "sentence"}   # "titled" has too short a first sentence
    with pytest.raises(ValueError, match="must be among title, sentence, terms, not words"):
        pseudo_queries(ROWS, "en", ("title", "words"))
