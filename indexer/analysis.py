"""Language analysis of the keyword stage, done in Python (no Django, no Elasticsearch).

The Elasticsearch that `make run` starts (Elastic's integ-test-zip) has only the server
module's analysis: the standard, simple, whitespace, keyword and stop analyzers, no stemmer, no
language analyzer, no Chinese segmentation. So chunks are analyzed here, at index time into the
`title_terms` / `text_terms` fields (a `whitespace` analyzer, present in every distribution, just
splits what this module wrote) and at query time into the terms of the BM25 query. One code
path for the test distribution, the official image and any other engine.

    language  index and query terms
    en        word tokens, lowercased, possessive 's removed, English stop words dropped,
              Snowball English (Porter2) stems (PyStemmer)
    zh        jieba word segmentation; the index also gets the dictionary words inside longer
              words (jieba's "search" mode) so that 生物 finds 生物学; lowercased, a few particles
              dropped; a query is segmented in jieba's precise mode
    none      no terms fields: the `standard` analyzer on `title` / `text` (the behaviour before
              languages existed)

Highlights are computed here too (`highlight`): the surface words of a text whose analyzed form
is one of the query's terms are marked, so a stop word is never marked and "running" is marked
for the query "run". Figures that chose the details: docs/keyword-search.md.
"""
from __future__ import annotations

import bisect
import logging
import re
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

log = logging.getLogger(__name__)

LANGUAGES: dict[str, str] = {
    "en": "English: stemming and stop words",
    "zh": "Chinese: jieba word segmentation",
    "none": "no analysis: Elasticsearch's standard analyzer, no stemming or stop words, Chinese by character",
}
DEFAULT_LANGUAGE = "en"
# Languages whose chunks carry `title_terms` / `text_terms` written by this module.
ANALYZED = ("en", "zh")

HIGHLIGHT_START, HIGHLIGHT_END = "\ue000", "\ue001"
SNIPPET_CHARS = 300


class UnknownLanguage(ValueError):
    pass


def valid_languages() -> str:
    return ", ".join(f"{code} ({label})" for code, label in LANGUAGES.items())


def check_language(code: str) -> str:
    """The code itself, or UnknownLanguage with the list of valid ones."""
    if code not in LANGUAGES:
        raise UnknownLanguage(f"unknown language {code!r}; choose one of: {valid_languages()}")
    return code


# --------------------------------------------------------------------------- tokens

# CJK ideographs, kana and hangul are one token each in the standard tokenizer (and in `en`,
# where a stray Chinese word must not become one long token).
_CJK = "\u2e80-\u2fff\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_ALNUM = rf"[^\W_{_CJK}]"
# A number with decimal or thousands separators stays one token (as in the standard tokenizer);
# an apostrophe inside a word too ("don't", "cell's").
_TOKEN = re.compile(rf"\d+(?:[.,]\d+)+|{_ALNUM}+(?:['’]{_ALNUM}+)*|[{_CJK}]")
_MARKS = re.compile(f"[{HIGHLIGHT_START}{HIGHLIGHT_END}]")


@dataclass(frozen=True)
class Token:
    start: int
    end: int
    forms: tuple[str, ...]  # its index terms; empty for a stop word or punctuation


# Lucene's English stop set (Elasticsearch's `_english_`, used by its `english` analyzer). The
# longer Snowball list was measured too and did no better (docs/keyword-search.md).
ENGLISH_STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with".split()
)

# Particles, conjunctions and prepositions so frequent that they only add noise to BM25 scores.
CHINESE_STOP_WORDS = frozenset(
    "的 了 和 与 及 或 是 在 也 都 而 之 其 这 那 就 被 把 对 为 于 以 并 且 等 着 过 吗 呢 吧 啊 个 中 上 下".split()
)


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer  # PyStemmer: the Snowball stemmers compiled

    return Stemmer.Stemmer("english")


_stem_lock = threading.Lock()


def _english_forms(words: list[str]) -> list[str | None]:
    """Index term of each word (None for a stop word)."""
    lowered = []
    for word in words:
        word = word.lower().replace("’", "'")
        if word.endswith("'s"):
            word = word[:-2]
        lowered.append(word)
    keep = [w for w in lowered if w and w not in ENGLISH_STOP_WORDS]
    # A PyStemmer object is not safe to share between threads (its cache); the web server's
    # threads take turns, which costs microseconds.
    with _stem_lock:
        stems = iter(_stemmer().stemWords(keep))
    return [next(stems) if w and w not in ENGLISH_STOP_WORDS else None for w in lowered]


_jieba_lock = threading.Lock()


@lru_cache(maxsize=1)
def _jieba():
    """jieba with its dictionary loaded (about a second, once per process; its cache file goes to
    the temporary directory). Its own log lines go through logging at WARNING."""
    import jieba

    with _jieba_lock:
        jieba.setLogLevel(logging.WARNING)
        started = time.perf_counter()
        jieba.initialize()
        log.info("jieba dictionary loaded in %.2f s", time.perf_counter() - started)
    return jieba


def _is_word(token: str) -> bool:
    return any(ch.isalnum() for ch in token)


def _chinese_forms(word: str, search: bool) -> tuple[str, ...]:
    """The terms of one jieba word: the word and, with `search`, the dictionary words of two and
    three characters inside it (exactly what jieba's cut_for_search adds)."""
    if not _is_word(word):
        return ()
    word = word.lower()
    forms = []
    if search:
        freq = _jieba().dt.FREQ
        for n in (2, 3):
            if len(word) > n:
                forms += [word[i:i + n] for i in range(len(word) - n + 1) if freq.get(word[i:i + n])]
    forms.append(word)
    return tuple(f for f in forms if f not in CHINESE_STOP_WORDS and not f.isspace())


def tokens(text: str, language: str) -> list[Token]:
    """The words of `text` with their character offsets and index terms (stop words and
    punctuation have none). `search`-mode Chinese forms: what the index holds."""
    if language == "zh":
        jieba = _jieba()
        return [Token(start, end, _chinese_forms(word, search=True))
                for word, start, end in jieba.tokenize(text) if _is_word(word)]
    matches = list(_TOKEN.finditer(text))
    if language == "en":
        forms = _english_forms([m.group() for m in matches])
        return [Token(m.start(), m.end(), (f,) if f else ()) for m, f in zip(matches, forms)]
    if language == "none":
        return [Token(m.start(), m.end(), (m.group().lower(),)) for m in matches]
    check_language(language)
    raise AssertionError("unreachable")


def analyze(text: str, language: str) -> list[str]:
    """Index terms of a text (a chunk or a title), in order."""
    return [form for token in tokens(text, language) for form in token.forms]


def index_terms(text: str, language: str) -> str:
    """The value of a `*_terms` field: the terms separated by spaces (no term holds a space)."""
    return " ".join(analyze(text, language))


def query_terms(query: str, language: str) -> list[str]:
    """Terms of a query, without repeats, in order. Chinese queries are segmented in precise
    mode: a query word that is longer than a dictionary word still finds it in the index, and a
    shorter one finds the longer words that contain it (their search-mode forms)."""
    if language == "zh":
        jieba = _jieba()
        terms = [f for word in jieba.cut(query) for f in _chinese_forms(word, search=False)]
    else:
        terms = analyze(query, language)
    return list(dict.fromkeys(terms))


# --------------------------------------------------------------------------- highlights

_SENTENCE_END = re.compile(r"[.!?;。！？；]\s*|\n+")


def clean(text: str) -> str:
    """A text without our highlight mark characters (a document could contain them)."""
    return _MARKS.sub("", text)


def highlight(text: str, terms: set[str] | frozenset[str], language: str,
              fragment_chars: int | None = SNIPPET_CHARS) -> str:
    """`text` (or, with `fragment_chars`, its best passage of about that many characters) with
    HIGHLIGHT_START/END around each word whose index term is one of `terms`.

    The passage is the window of `fragment_chars` holding the most distinct query terms, then the
    most matches, starting at a sentence start when one is near, else at a word; with no match it
    is the text's beginning, cut at a word (Elasticsearch's `no_match_size`)."""
    text = clean(text)
    found = tokens(text, language)
    matched = [t for t in found if terms and any(f in terms for f in t.forms)]
    start, end = 0, len(text)
    if fragment_chars is not None and len(text) > fragment_chars:
        start, end = _best_window(text, found, matched, terms, fragment_chars)
    out, position = [], start
    for token in matched:
        if token.start < start or token.end > end:
            continue
        out += [text[position:token.start], HIGHLIGHT_START, text[token.start:token.end], HIGHLIGHT_END]
        position = token.end
    out.append(text[position:end])
    return "".join(out).strip()


def _best_window(text: str, found: list[Token], matched: list[Token], terms, size: int) -> tuple[int, int]:
    starts, ends = [t.start for t in found], [t.end for t in found]

    def cut_end(start: int) -> int:
        """End of the last whole word within `size` characters from `start`."""
        limit = start + size
        if limit >= len(text):
            return len(text)
        i = bisect.bisect_right(ends, limit) - 1
        end = ends[i] if i >= 0 and ends[i] > start else limit
        while end < limit and not text[end].isspace() and not text[end].isalnum():
            end += 1  # the punctuation after the last word
        return end

    if not matched:
        return 0, cut_end(0)
    sentence_starts = [0] + [m.end() for m in _SENTENCE_END.finditer(text)]
    candidates = set()
    for token in matched:
        # The sentence holding the match, when it starts close enough to show the match in the
        # window's first half; else a few words of context before the match.
        i = bisect.bisect_right(sentence_starts, token.start) - 1
        if token.start - sentence_starts[i] <= size // 2:
            candidates.add(sentence_starts[i])
        else:
            j = bisect.bisect_left(starts, max(token.start - size // 6, 0))
            candidates.add(found[j].start if j < len(found) else token.start)
    best = None
    for start in sorted(candidates):
        end = cut_end(start)
        inside = [t for t in matched if t.start >= start and t.end <= end]
        distinct = len({f for t in inside for f in t.forms if f in terms})
        score = (distinct, len(inside), -start)
        if best is None or score > best[0]:
            best = (score, start, end)
    return best[1], best[2]
