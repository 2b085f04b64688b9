"""Token-aware chunking with character offsets.

Chunk lengths are counted with the embedding model's own tokenizer, so a chunk never exceeds
what the model reads (longer input would be silently truncated at encode time). Each chunk
keeps `start`/`end` character offsets into the document text, so `text[start:end] == chunk.text`
and snippets/highlights map back to the document.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    number: int
    text: str
    start: int  # character offset into the document text, inclusive
    end: int  # exclusive
    tokens: int


def chunk_id(collection_slug: str, external_id: str, number: int) -> str:
    """Deterministic Elasticsearch `_id` of a chunk: re-indexing overwrites, never duplicates."""
    return f"{collection_slug}/{external_id}/{number}"


@functools.lru_cache(maxsize=8)
def load_tokenizer(model_id: str):
    """The tokenizer of an embedding model (a fast one: we need offset mappings)."""
    from transformers import AutoTokenizer

    from .embedding import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(model_id), use_fast=True)


def model_max_tokens(tokenizer, model_max_seq_length: int | None = None) -> int:
    """Content tokens the model can read once [CLS]/[SEP] (or their kind) are added."""
    limit = model_max_seq_length or tokenizer.model_max_length
    if not limit or limit > 100_000:  # "no limit" sentinel of some tokenizers
        limit = 512
    return limit - tokenizer.num_special_tokens_to_add(pair=False)


def chunk_text(text: str, tokenizer, max_tokens: int, overlap: int) -> list[Chunk]:
    """Split `text` into windows of at most `max_tokens` tokens sharing `overlap` tokens.

    Windows end on word boundaries where possible (a word longer than a window is cut),
    so a chunk never starts or ends in the middle of a word-piece sequence.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be positive")
    if not 0 <= overlap < max_tokens:
        raise ValueError("overlap must be >= 0 and smaller than max_tokens")
    if not text.strip():
        return []
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    word_ids = enc.word_ids()
    n = len(offsets)
    if n == 0:
        return []
    chunks: list[Chunk] = []
    start = 0
    while start < n:
        end = min(start + max_tokens, n)
        if end < n:
            # Back off to the start of the word that would be cut, unless that empties the window.
            cut = end
            while cut > start and word_ids[cut] is not None and word_ids[cut] == word_ids[cut - 1]:
                cut -= 1
            if cut > start + overlap:
                end = cut
        char_start, char_end = offsets[start][0], offsets[end - 1][1]
        chunks.append(Chunk(len(chunks), text[char_start:char_end], char_start, char_end, end - start))
        if end >= n:
            break
        next_start = max(end - overlap, start + 1)
        # Start the next window on a word start too.
        while next_start < end and word_ids[next_start] is not None and word_ids[next_start] == word_ids[next_start - 1]:
            next_start += 1
        start = next_start
    return chunks
