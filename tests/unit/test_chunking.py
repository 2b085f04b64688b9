"""Token-aware chunking with the embedding model's own tokenizer (no mocks: the real MiniLM one)."""
import json
import random

import pytest

from indexer.chunking import chunk_id, chunk_text, load_tokenizer, model_max_tokens
from indexer.importing import model_max_seq_length

SCIFACT_LIKE = (
    "Alterations of the architecture of cerebral white matter in the developing human brain can affect "
    "cortical development and result in functional disabilities. A line scan diffusion-weighted magnetic "
    "resonance imaging (MRI) sequence with diffusion tensor analysis was applied to measure the apparent "
    "diffusion coefficient, to calculate relative anisotropy, and to delineate three-dimensional fiber "
    "architecture in cerebral white matter in preterm (n = 17) and full-term infants (n = 7). "
    "Müller-Lyer illusions, naïve Bayes, café-au-lait spots, 東京大学 and emoji 🧠 appear too.\n\n"
)


# A model whose max_seq_length (256) is below its tokenizer's limit (512): the case to get right.
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(MINILM)


@pytest.fixture(scope="module")
def model_limit(tokenizer):
    """Content tokens the bi-encoder reads: its max_seq_length (256) minus [CLS] and [SEP]."""
    max_seq_length = model_max_seq_length(MINILM)
    assert max_seq_length == 256  # all-MiniLM-L6-v2 reads 256 tokens, not its tokenizer's 512
    return model_max_tokens(tokenizer, max_seq_length)


def long_text(paragraphs: int = 12, seed: int = 7) -> str:
    rng = random.Random(seed)
    words = SCIFACT_LIKE.split(" ")
    parts = []
    for _ in range(paragraphs):
        rng.shuffle(words)
        parts.append(" ".join(words) + "\n\n")
    return "".join(parts)


def test_model_limit_leaves_room_for_special_tokens(model_limit):
    assert model_limit == 254


def test_offsets_map_back_into_the_document(tokenizer, model_limit):
    text = long_text()
    chunks = chunk_text(text, tokenizer, model_limit, 32)
    assert len(chunks) > 3
    for number, chunk in enumerate(chunks):
        assert chunk.number == number
        assert text[chunk.start:chunk.end] == chunk.text
        assert chunk.text == chunk.text.strip()


@pytest.mark.parametrize("max_tokens", [16, 100, 254])
def test_never_over_the_model_limit(tokenizer, model_limit, max_tokens):
    text = long_text(paragraphs=20, seed=max_tokens)
    for chunk in chunk_text(text, tokenizer, min(max_tokens, model_limit), 8):
        assert chunk.tokens <= max_tokens
        # What the model will actually read, special tokens included, fits its max_seq_length.
        input_ids = tokenizer(chunk.text)["input_ids"]
        assert len(input_ids) <= model_limit + 2 == 256
        assert len(input_ids) - 2 == chunk.tokens


def test_chunks_cover_the_text_and_overlap(tokenizer):
    text = long_text()
    overlap = 20
    chunks = chunk_text(text, tokenizer, 120, overlap)
    assert chunks[0].start == 0
    assert chunks[-1].end == len(text.rstrip())
    for previous, current in zip(chunks, chunks[1:]):
        assert previous.start < current.start < previous.end  # they overlap...
        shared = text[current.start:previous.end]
        shared_tokens = len(tokenizer(shared, add_special_tokens=False)["input_ids"])
        # ...by at most `overlap` tokens (fewer when the window moved to a word start).
        assert 0 < shared_tokens <= overlap


def test_no_overlap(tokenizer):
    text = long_text(paragraphs=4)
    chunks = chunk_text(text, tokenizer, 64, 0)
    for previous, current in zip(chunks, chunks[1:]):
        assert current.start >= previous.end
        assert text[previous.end:current.start].strip() == ""


def in_word(a: str, b: str) -> bool:
    """Two neighbouring characters of one Latin word (each CJK character is a word of its own)."""
    return a.isascii() and b.isascii() and a.isalnum() and b.isalnum()


def test_chunks_end_on_word_boundaries(tokenizer):
    text = long_text()
    chunks = chunk_text(text, tokenizer, 50, 10)
    assert len(chunks) > 10
    for chunk in chunks:
        if chunk.start > 0:
            assert not in_word(text[chunk.start - 1], text[chunk.start]), chunk
        if chunk.end < len(text):
            assert not in_word(text[chunk.end - 1], text[chunk.end]), chunk


def test_a_word_longer_than_a_window_is_cut(tokenizer):
    # One 91-character word of 81 word pieces (BERT maps words over 100 characters to [UNK]).
    word = "qzx" + "7kq9vwj3" * 11
    assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 81
    text = f"start {word} end"
    chunks = chunk_text(text, tokenizer, 32, 4)
    assert len(chunks) >= 3
    assert all(c.tokens <= 32 for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for chunk in chunks:
        assert text[chunk.start:chunk.end] == chunk.text


def test_short_and_empty_texts(tokenizer):
    assert chunk_text("", tokenizer, 64, 8) == []
    assert chunk_text(" \n\t ", tokenizer, 64, 8) == []
    [only] = chunk_text("  One short sentence.  ", tokenizer, 64, 8)
    assert (only.text, only.start, only.end, only.number) == ("One short sentence.", 2, 21, 0)


def test_deterministic(tokenizer):
    text = long_text(seed=3)
    assert chunk_text(text, tokenizer, 80, 16) == chunk_text(text, tokenizer, 80, 16)


def test_chunk_ids_are_deterministic_and_readable():
    assert chunk_id("scifact", "4983", 0) == "scifact/4983/0"
    assert chunk_id("scifact", "4983", 12) == chunk_id("scifact", "4983", 12)
    assert json.dumps(chunk_id("c", "a b/é", 1)) == json.dumps("c/a b/é/1")


@pytest.mark.parametrize("max_tokens, overlap", [(0, 0), (10, 10), (10, -1)])
def test_bad_settings(tokenizer, max_tokens, overlap):
    with pytest.raises(ValueError):
        chunk_text("some text", tokenizer, max_tokens, overlap)
