"""The cross-encoder as a worker uses it: loaded once per process, on the runtime that suits
the device, scoring (query, passage) pairs.

Any sentence-transformers `CrossEncoder` with one output works: a Hugging Face id (downloaded
unless HF_HUB_OFFLINE=1), a local directory (e.g. a model trained by `reranker/training.py`), or
the site's setting RERANKER_MODEL. Scores are raw logits (unbounded, only comparable within one
model) and their sigmoid (0..1, the "probability of relevance" reading of ms-marco style
cross-encoders).

Runtime (RERANKER_RUNTIME, reranker/scorers.py): on CUDA torch in float16; on a CPU OpenVINO
on the model's export (made and cached beside the weights on first use, rebuilt when missing
or damaged), int8 where the export records that int8 kept the model's held-out quality. When
OpenVINO cannot serve a model, the worker logs why and uses torch.
"""
from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings

from indexer.embedding import resolve_model_path

from .fusion import ModelFusion, load_fusion
from .openvino_export import ExportError, export
from common.precision import pick_device, resolve_precision
from .scorers import OpenVinoScorer, TorchScorer, pairs_per_second, pick_runtime, thread_count

log = logging.getLogger(__name__)


class RerankerUnavailable(Exception):
    """No model is configured, or the configured one cannot be used as a reranker."""


def configured_model(collection_model: str = "") -> str:
    """The model that reranks a collection: its own `reranker_model`, else the site's setting."""
    return (collection_model or "").strip() or (settings.RERANKER_MODEL or "").strip()


@dataclass
class Reranker:
    """A loaded cross-encoder: its scorer (torch or OpenVINO), its fusion with the first stage
    (reranker/fusion.py), and why the runtime asked for is not the one used."""
    model_id: str
    path: str
    scorer: object  # TorchScorer | OpenVinoScorer
    fusion: ModelFusion
    fallback_reason: str = ""

    @property
    def runtime(self) -> str:
        return self.scorer.runtime

    @property
    def precision(self) -> str:
        return self.scorer.precision

    @property
    def device(self) -> str:
        return self.scorer.device

    @property
    def max_length(self) -> int:
        return self.scorer.max_length

    def describe(self) -> dict:
        return {"model": self.model_id, "runtime": self.runtime, "precision": self.precision,
                "device": self.device, "max_length": self.max_length,
                "fallback_reason": self.fallback_reason or None}

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """Raw logits of (query, passage) for every passage, in the order given."""
        return self.scorer.score_pairs([(query, passage) for passage in passages])


def _torch_cross_encoder(path: str, model_id: str, device: str):
    from sentence_transformers import CrossEncoder

    try:
        model = CrossEncoder(path, device=device)
    except (OSError, ValueError) as exc:
        raise RerankerUnavailable(f"cannot load reranker {model_id!r}: {exc}") from exc
    if model.num_labels != 1:
        raise RerankerUnavailable(f"{model_id!r} has {model.num_labels} outputs; a reranker needs exactly one")
    return model


def token_limit(tokenizer, config) -> int:
    """Tokens per pair: RERANKER_MAX_LENGTH, or the model's own limit when that is smaller
    (`train_reranker` sets the tokenizer's limit to the length it trained on)."""
    model_limit = getattr(tokenizer, "model_max_length", None) or settings.RERANKER_MAX_LENGTH
    max_positions = getattr(config, "max_position_embeddings", None) or model_limit
    return min(settings.RERANKER_MAX_LENGTH, model_limit, max_positions)


def directory_token_limit(path: str) -> int:
    """token_limit of a model directory, read from its tokenizer and config files."""
    from transformers import AutoConfig, AutoTokenizer

    return token_limit(AutoTokenizer.from_pretrained(str(path)), AutoConfig.from_pretrained(str(path)))


def _openvino_scorer(path: str, device: str) -> tuple[OpenVinoScorer | None, str]:
    """The OpenVINO scorer RERANKER_RUNTIME asks for on `device`, or (None, why not). int8 asked
    for where the model has no int8 export gives float32, saying why."""
    if not Path(path).is_dir():
        return None, f"{path} is not a local directory"
    try:
        state = export(path)  # reuses an intact export; (re)creates a missing or damaged one
        runtime, quantized = pick_runtime(device, settings.RERANKER_RUNTIME, state.int8_allowed)
        if runtime != "openvino":
            return None, ""
        reason = ""
        if quantized and not state.has_int8:
            reason, quantized = f"int8 asked for, but {state.int8_reason}; float32 instead", False
            log.error("reranker %s: %s", path, reason)
        limit, threads = directory_token_limit(path), thread_count(settings.RERANKER_THREADS, settings.RERANK_CONCURRENCY)
        scorer = OpenVinoScorer(path, quantized, limit, settings.RERANKER_BATCH_SIZE, threads)
        if quantized and settings.RERANKER_RUNTIME == "auto":
            # int8 pays where the CPU has fast int8 dot products (VNNI); elsewhere it can be
            # slower than float32 (docs/relevance.md), so the worker times both and keeps the faster.
            float32 = OpenVinoScorer(path, False, limit, settings.RERANKER_BATCH_SIZE, threads)
            int8_speed, float32_speed = pairs_per_second(scorer), pairs_per_second(float32)
            if int8_speed <= float32_speed:
                log.warning("reranker %s: int8 (%.0f pairs/s) is not faster than float32 (%.0f pairs/s) on this "
                            "CPU; float32 in OpenVINO", path, int8_speed, float32_speed)
                scorer = float32
        if quantized is False and settings.RERANKER_RUNTIME == "auto":
            log.info("reranker %s: float32 in OpenVINO (%s)", path, state.int8_reason)
        return scorer, reason
    except ExportError as exc:
        return None, str(exc)
    except Exception as exc:  # OpenVINO cannot compile or run the graph: torch still can
        return None, f"{type(exc).__name__}: {exc}"


@functools.lru_cache(maxsize=4)
def load_reranker(model_id: str) -> Reranker:
    """Load a reranker once per process (at most 4 kept)."""
    if not model_id:
        raise RerankerUnavailable("no reranker model configured (set RERANKER_MODEL)")
    device = pick_device(settings.RERANKER_DEVICE)
    try:
        path = resolve_model_path(model_id)
    except (OSError, ValueError) as exc:
        raise RerankerUnavailable(f"cannot load reranker {model_id!r}: {exc}") from exc
    try:
        fusion = load_fusion(path if Path(path).is_dir() else None)
    except ValueError as exc:
        raise RerankerUnavailable(str(exc)) from exc
    scorer, fallback = None, ""
    wanted, _ = pick_runtime(device, settings.RERANKER_RUNTIME, False)
    if wanted == "openvino":
        scorer, fallback = _openvino_scorer(path, device)
        if scorer is None:
            log.error("reranker %s: OpenVINO cannot serve it (%s); using torch", model_id, fallback)
    if scorer is None:
        model = _torch_cross_encoder(path, model_id, device)
        model.max_seq_length = token_limit(model.tokenizer, getattr(model, "config", None))
        precision = resolve_precision(device, settings.RERANKER_PRECISION)
        if precision == "float16":
            model.half()
        model.eval()
        scorer = TorchScorer(model, precision, settings.RERANKER_BATCH_SIZE,
                             thread_count(settings.RERANKER_THREADS, settings.RERANK_CONCURRENCY))
    reranker = Reranker(model_id, path, scorer, fusion, fallback)
    log.info("loaded reranker %s: %s on %s, %s (max %d tokens)", model_id, reranker.runtime, reranker.device,
             reranker.precision, reranker.max_length)
    return reranker


def score_passages(model_id: str, query: str, passages: Sequence[str]) -> np.ndarray:
    """Raw logits of (query, passage) for every passage, in the order given (`score_pairs`
    everywhere else takes the pairs themselves)."""
    if not passages:
        return np.zeros(0, dtype=np.float32)
    return load_reranker(model_id).score(query, passages)


def sigmoid(logit: float) -> float:
    """1 / (1 + e^-logit), without overflow for large negative logits."""
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    z = math.exp(logit)
    return z / (1.0 + z)
