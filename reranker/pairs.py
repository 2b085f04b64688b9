"""(query, passage) pairs tokenised as every runtime feeds them to a cross-encoder."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def pair_batches(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int,
                 batch_size: int) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """(positions in `pairs`, padded numpy features) per batch, shortest pairs first."""
    encoded = tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation="longest_first",
                        max_length=max_length)
    lengths = np.array([len(ids) for ids in encoded["input_ids"]])
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        positions = order[start:start + batch_size]
        batch = {key: [values[i] for i in positions] for key, values in encoded.items()}
        features = tokenizer.pad(batch, padding="longest", return_tensors="np")
        yield positions, {key: np.asarray(value, dtype=np.int64) for key, value in features.items()}
