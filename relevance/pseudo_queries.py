"""Pseudo-queries: queries made from a collection's own documents, for training (and judging) a
reranker where nobody has judged any (train_reranker --pseudo-only, relevance/auto_reranker.py).

Each document gives at most one, of the first kind in the order asked for that it can give:

    title     its title, where the title reads like a query (`looks_like_title`); the passage
              it stands for is the text, without the title
    sentence  its leading sentence, where that reads like prose of query length; the passage is
              the rest of the text, so the answer does not hold the query word for word (as in
              the inverse cloze task)
    terms     its key terms: the words of highest tf-idf in the collection's keyword analysis
              (indexer/analysis.py) among those other documents use too (a word only this
              document has would make finding it trivial), in the order they first appear

Plain functions of the documents' (external id, title, text): no database, no search engine.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from indexer.analysis import analyze, tokens

KINDS = ("title", "sentence", "terms")

# A leading sentence between these many words (tokens of the analysis; Chinese: jieba words),
# with at least REST_MIN_WORDS words of text after it.
SENTENCE_WORDS = (4, 40)
REST_MIN_WORDS = 8
# Key terms: this many (at least KEY_TERMS_MIN), each of at least 2 characters, not a number,
# found in at least 2 documents and in at most half of them.
KEY_TERMS = 5
KEY_TERMS_MIN = 3

_FILE_NAME = re.compile(r"\.(pdf|docx?|odt|rtf|txt|md|html?|xml|jsonl?|csv|tsv|pptx?|xlsx?)$", re.IGNORECASE)
_IDENTIFIER = re.compile(r"^[\w.\-]+$")
# The end of a sentence: . ! ? followed by a space, a Chinese full stop, or a line break.
_SENTENCE_END = re.compile(r"[.!?](?=\s)|[。！？]|\n")


@dataclass(frozen=True)
class PseudoQuery:
    external_id: str
    query: str
    kind: str      # one of KINDS
    passage: str   # the text the query stands for (what the reranker reads as the relevant passage)


def looks_like_title(title: str, text: str) -> bool:
    """Whether a document's title can stand for a query about its text: a few words of prose, not
    a file name or an identifier, and not the text's own first line (the passage would then
    hold the query word for word)."""
    words = title.split()
    if not 2 <= len(words) <= 30 or _FILE_NAME.search(title.strip()):
        return False
    if _IDENTIFIER.match(title.strip()) and ("_" in title or not any(c.isspace() for c in title)):
        return False
    if not _mostly_letters(title):
        return False
    head = " ".join(text.split()[:len(words) + 5]).lower()
    return not head.startswith(" ".join(words).lower())


def _mostly_letters(text: str) -> bool:
    compact = "".join(text.split())
    return bool(compact) and sum(c.isalpha() for c in compact) >= 0.5 * len(compact)


def leading_sentence(text: str, language: str) -> tuple[str, str] | None:
    """(the text's first sentence, the text after it) where the sentence reads like a query-length
    piece of prose and enough text follows; else None."""
    stripped = text.strip()
    end = _SENTENCE_END.search(stripped)
    if end is None:
        return None
    sentence, rest = stripped[:end.end()].strip(), stripped[end.end():].strip()
    low, high = SENTENCE_WORDS
    if not low <= len(tokens(sentence, language)) <= high or not _mostly_letters(sentence):
        return None
    if len(tokens(rest, language)) < REST_MIN_WORDS:
        return None
    return sentence, rest


class KeyTerms:
    """Key terms of documents against the document frequencies of a whole collection."""

    def __init__(self, texts: list[str], language: str):
        self.language = language
        self.documents = len(texts)
        self.frequency = Counter(term for text in texts for term in set(analyze(text, language)))

    def of(self, text: str, count: int = KEY_TERMS) -> str | None:
        """The query of `count` key terms of `text` (surface words, in text order), or None when
        fewer than KEY_TERMS_MIN qualify."""
        first_word: dict[str, str] = {}
        first_place: dict[str, int] = {}
        tf: Counter = Counter()
        for place, token in enumerate(tokens(text, self.language)):
            if not token.forms:
                continue
            term = token.forms[-1]  # the word's own form (Chinese: not the sub-words)
            tf[term] += 1
            first_word.setdefault(term, text[token.start:token.end])
            first_place.setdefault(term, place)
        scored = []
        for term, n in tf.items():
            df = self.frequency.get(term, 0)
            if len(term) < 2 or term.replace(".", "").replace(",", "").isdigit():
                continue
            if not 2 <= df <= self.documents / 2:
                continue
            scored.append((n * math.log(self.documents / df), term))
        chosen = [term for _, term in sorted(scored, key=lambda pair: (-pair[0], pair[1]))[:count]]
        if len(chosen) < KEY_TERMS_MIN:
            return None
        return " ".join(first_word[term] for term in sorted(chosen, key=first_place.__getitem__))


def pseudo_queries(rows: list[tuple[str, str, str]], language: str, kinds: tuple[str, ...] = KINDS,
                   ) -> list[PseudoQuery]:
    """One pseudo-query per document of `rows` (external id, title, text) that can give one of
    `kinds`, trying them in that order."""
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"pseudo-query kinds must be among {', '.join(KINDS)}, not {', '.join(unknown) or 'none'}")
    key_terms = None
    made = []
    for external_id, title, text in rows:
        for kind in kinds:
            if kind == "title" and title and looks_like_title(title, text):
                made.append(PseudoQuery(external_id, title, kind, text))
                break
            if kind == "sentence" and (split := leading_sentence(text, language)):
                made.append(PseudoQuery(external_id, split[0], kind, split[1]))
                break
            if kind == "terms":
                if key_terms is None:  # the collection's frequencies, only when needed
                    key_terms = KeyTerms([text for _, _, text in rows], language)
                if query := key_terms.of(text):
                    made.append(PseudoQuery(external_id, query, kind, text))
                    break
    return made

