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


@lru_cache(maxsize=65536)
def _english_form(word: str) -> str | None:
    """One word's index term (highlighting looks at a few words of many texts: cached)."""
    return _english_forms([word])[0]


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
#
# A search highlights up to SEARCH_DEPTH chunks, so this must not analyze every word of each:
# for en and none, a substring search finds the places where a word could analyze to a query term, and only
# those words are analyzed (with the same functions as the index). A Snowball English stem is the
# start of its word less at most its last letter ("studi": studies, studied, study), except for
# three irregular forms listed below (checked on the 38,641 distinct words of SciFact); a `none`
# term is its lowercased word.

_SENTENCE_END = re.compile(r"[.!?;。！？；]\s*|\n+")
_SPACE = re.compile(r"\s")
# Porter2's exceptional forms whose stem does not start like the word.
_IRREGULAR_STEMS = {"die": "dy", "lie": "ly", "tie": "ty"}


@lru_cache(maxsize=1024)
def _prefixes(terms: frozenset[str], language: str) -> tuple[str, ...]:
    """Lowercase strings that a word analyzing to one of `terms` starts with."""
    prefixes = set()
    for term in terms:
        if language == "en":
            prefixes.add(term[:-1] if len(term) > 2 else term[:1])
            if term in _IRREGULAR_STEMS:
                prefixes.add(_IRREGULAR_STEMS[term])
        else:
            prefixes.add(term)
    return tuple(sorted(prefixes))


_CJK_CHAR = re.compile(f"[{_CJK}]")


def _inside_word(text: str, i: int) -> bool:
    """Whether position `i` continues a word (a token of _TOKEN cannot start there)."""
    if i == 0:
        return False
    before = text[i - 1]
    return before.isalnum() and (before < "\u0080" or not _CJK_CHAR.match(before))


def _token_at(text: str, i: int):
    """The token (a regex match) that starts at `i`, as `tokens` would find it, or None."""
    start = i
    while start > 0 and not text[start - 1].isspace():
        start -= 1  # no token spans whitespace: tokenizing from here finds the same tokens
    end = _SPACE.search(text, i)
    for match in _TOKEN.finditer(text, start, end.start() if end else len(text)):
        if match.start() >= i:
            return match if match.start() == i else None
    return None


def _matches(text: str, terms: frozenset[str], language: str) -> list[tuple[int, int, tuple[str, ...]]]:
    """(start, end, query terms) of each word of `text` whose index term is one of `terms`."""
    if not terms:
        return []
    if language == "zh":
        lowered = text.lower()
        if not any(term in lowered for term in terms):  # a term is a piece of the text
            return []
        found = []
        for token in tokens(text, language):
            hit = tuple(f for f in token.forms if f in terms)
            if hit:
                found.append((token.start, token.end, hit))
        return found
    check_language(language)
    lowered = text.lower()
    if len(lowered) != len(text):  # a rare character whose lowercase is longer: analyze every word
        found = []
        for token in tokens(text, language):
            if token.forms and token.forms[0] in terms:
                found.append((token.start, token.end, token.forms))
        return found
    starts = set()
    for prefix in _prefixes(terms, language):
        i = lowered.find(prefix)
        while i >= 0:
            if not _inside_word(text, i):
                starts.add(i)
            i = lowered.find(prefix, i + 1)
    found = []
    for i in sorted(starts):
        token = _token_at(text, i)
        if token is None:
            continue
        word = token.group()
        form = _english_form(word) if language == "en" else word.lower()
        if form in terms:
            found.append((token.start(), token.end(), (form,)))
    return found


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
    matched = _matches(text, frozenset(terms), language)
    start, end = 0, len(text)
    if fragment_chars is not None and len(text) > fragment_chars:
        start, end = _best_window(text, matched, fragment_chars)
    out, position = [], start
    for token_start, token_end, _ in matched:
        if token_start < start or token_end > end:
            continue
        out += [text[position:token_start], HIGHLIGHT_START, text[token_start:token_end], HIGHLIGHT_END]
        position = token_end
    out.append(text[position:end])
    return "".join(out).strip()


def _cut_end(text: str, start: int, size: int) -> int:
    """The end of a window of at most `size` characters from `start`, after a whole word (at the
    last whitespace; text without spaces, such as Chinese, is cut at the limit)."""
    limit = start + size
    if limit >= len(text):
        return len(text)
    cut = max(text.rfind(ch, start, limit + 1) for ch in " \n\t")
    return cut if cut > start else limit


def _word_start(text: str, position: int, before: int) -> int:
    """The first word start at or after `position` (not after `before`)."""
    if position == 0 or text[position - 1].isspace():
        return position
    space = _SPACE.search(text, position, before)
    return space.end() if space else before


def _best_window(text: str, matched: list, size: int) -> tuple[int, int]:
    if not matched:
        return 0, _cut_end(text, 0, size)
    sentence_starts = [0] + [m.end() for m in _SENTENCE_END.finditer(text)]
    candidates = set()
    for token_start, _, _ in matched:
        # The sentence holding the match, when it starts close enough to show the match in the
        # window's first half; else a few words of context before the match.
        i = bisect.bisect_right(sentence_starts, token_start) - 1
        if token_start - sentence_starts[i] <= size // 2:
            candidates.add(sentence_starts[i])
        else:
            candidates.add(_word_start(text, max(token_start - size // 6, 0), token_start))
    match_starts = [m[0] for m in matched]  # sorted: matches are in text order
    best = None
    for start in sorted(candidates):
        end = _cut_end(text, start, size)
        inside = matched[bisect.bisect_left(match_starts, start):bisect.bisect_left(match_starts, end)]
        inside = [m for m in inside if m[1] <= end]
        distinct = len({term for m in inside for term in m[2]})
        score = (distinct, len(inside), -start)
        if best is None or score > best[0]:
            best = (score, start, end)
    return best[1], best[2]
