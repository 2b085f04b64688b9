"""The cross-encoder: loading a reranker once per process and scoring (query, passage) pairs.

Any sentence-transformers `CrossEncoder` with one output works: a Hugging Face id (downloaded
unless HF_HUB_OFFLINE=1), a local directory (e.g. a model trained by `reranker/training.py`), or
the site's setting RERANKER_MODEL. Scores are raw logits (what the model outputs, unbounded, only
comparable within one model) and their sigmoid (0..1, the "probability of relevance" reading that
ms-marco style cross-encoders were trained for).
"""
from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence

from pathlib import Path

import numpy as np
from django.conf import settings

from indexer.embedding import pick_device, resolve_model_path

from .fusion import load_fusion
from .precision import autocast, resolve_precision

log = logging.getLogger(__name__)


class RerankerUnavailable(Exception):
    """No model is configured, or the configured one cannot be used as a reranker."""


def configured_model(collection_model: str = "") -> str:
    """The model that reranks a collection: its own `reranker_model`, else the site's setting."""
    return (collection_model or "").strip() or (settings.RERANKER_MODEL or "").strip()


@functools.lru_cache(maxsize=4)
def load_cross_encoder(model_id: str, device: str | None = None):
    """Load a CrossEncoder once per process: at RERANKER_PRECISION (auto: float16 on CUDA,
    bfloat16 autocast on CPUs with native bfloat16, see reranker/precision.py), truncation at
    RERANKER_MAX_LENGTH tokens (or the model's own limit when that is smaller)."""
    from sentence_transformers import CrossEncoder

    if not model_id:
        raise RerankerUnavailable("no reranker model configured (set RERANKER_MODEL)")
    device = device or pick_device(settings.RERANKER_DEVICE)
    try:
        path = resolve_model_path(model_id)
        model = CrossEncoder(path, device=device)
    except (OSError, ValueError) as exc:
        raise RerankerUnavailable(f"cannot load reranker {model_id!r}: {exc}") from exc
    if model.num_labels != 1:
        raise RerankerUnavailable(f"{model_id!r} has {model.num_labels} outputs; a reranker needs exactly one")
    model_limit = getattr(model.tokenizer, "model_max_length", None) or settings.RERANKER_MAX_LENGTH
    max_positions = getattr(getattr(model, "config", None), "max_position_embeddings", None) or model_limit
    model.max_seq_length = min(settings.RERANKER_MAX_LENGTH, model_limit, max_positions)
    model.precision = resolve_precision(device, settings.RERANKER_PRECISION)
    # How the final order mixes this model's order with the first stage's (reranker/fusion.py).
    try:
        model.fusion = load_fusion(path if Path(path).is_dir() else None)
    except ValueError as exc:
        raise RerankerUnavailable(str(exc)) from exc
    if model.precision == "float16":
        model.half()
    model.eval()
    log.info("loaded reranker %s on %s, %s (max %d tokens)", model_id, device, model.precision, model.max_seq_length)
    return model


def score_pairs(model_id: str, query: str, passages: Sequence[str], batch_size: int | None = None) -> np.ndarray:
    """Raw logits of (query, passage) for every passage, in the order given."""
    import torch

    if not passages:
        return np.zeros(0, dtype=np.float32)
    model = load_cross_encoder(model_id)
    with autocast(str(model.device), model.precision):
        logits = model.predict(
            [(query, passage) for passage in passages],
            batch_size=batch_size or settings.RERANKER_BATCH_SIZE,
            activation_fn=torch.nn.Identity(),  # raw logits; the sigmoid is computed by `sigmoid`
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    return np.asarray(logits, dtype=np.float32).reshape(-1)


def sigmoid(logit: float) -> float:
    """1 / (1 + e^-logit), without overflow for large negative logits."""
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    z = math.exp(logit)
    return z / (1.0 + z)
