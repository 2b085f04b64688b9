"""Scoring (query, passage) pairs with a cross-encoder, on one of two runtimes:

- `TorchScorer`: the model in torch (CUDA float16, CPU bfloat16 autocast where the CPU has it,
  else float32; reranker/precision.py).
- `OnnxScorer`: its ONNX export (reranker/onnx_export.py) in ONNX Runtime on the CPU, float32
  or int8.

Both tokenise every pair once with the model's own tokenizer, sort the pairs by length and pad
each batch only to its longest pair, so short passages do not pay for long ones; the scores
come back in the order given. `pick_runtime` decides which one a worker uses.

Django-free: training scores its held-out queries through the same classes.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .onnx_export import FP32, INT8, read_export
from .precision import autocast

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def thread_count(setting: int = 0, processes: int = 1) -> int:
    """Threads for one scoring process: `setting` when positive, else the usable cores shared
    among the `processes` that score on this machine (a prefork worker's pool), at least 1."""
    if setting > 0:
        return setting
    return max(1, usable_cores() // max(1, processes))


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


def _gather(scores_by_batch: list[tuple[np.ndarray, np.ndarray]], count: int) -> np.ndarray:
    out = np.empty(count, dtype=np.float32)
    for positions, scores in scores_by_batch:
        out[positions] = scores
    return out


class TorchScorer:
    """A sentence-transformers CrossEncoder run by torch."""

    runtime = "torch"

    def __init__(self, model, precision: str, batch_size: int = 32, threads: int = 0):
        self.model = model
        self.precision = precision
        self.batch_size = batch_size
        self.device = str(model.device)
        self.max_length = model.max_seq_length
        self.tokenizer = model.tokenizer
        if threads and self.device == "cpu":
            import torch

            torch.set_num_threads(threads)

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        import torch

        if not pairs:
            return np.zeros(0, dtype=np.float32)
        results = []
        with torch.inference_mode(), autocast(self.device, self.precision):
            for positions, features in pair_batches(self.tokenizer, pairs, self.max_length, self.batch_size):
                tensors = {key: torch.from_numpy(value).to(self.model.device) for key, value in features.items()}
                scores = self.model(tensors)["scores"].reshape(-1).float().cpu().numpy()
                results.append((positions, scores))
        return _gather(results, len(pairs))


class OnnxScorer:
    """An ONNX export of a cross-encoder in ONNX Runtime on the CPU."""

    runtime = "onnxruntime"
    device = "cpu"

    def __init__(self, model_dir: str | Path, quantized: bool, max_length: int, batch_size: int = 32,
                 threads: int = 1):
        import onnxruntime
        from transformers import AutoTokenizer

        state = read_export(model_dir)  # ExportError when missing or damaged
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = state.folder / (INT8 if quantized else FP32)
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.precision = "int8" if quantized else "float32"
        self.max_length = max_length
        self.batch_size = batch_size
        self.threads = threads

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        results = []
        for positions, features in pair_batches(self.tokenizer, pairs, self.max_length, self.batch_size):
            feeds = {name: features[name] for name in self.inputs}
            results.append((positions, self.session.run(None, feeds)[0].reshape(-1)))
        return _gather(results, len(pairs))


def pick_runtime(device: str, setting: str, int8_allowed: bool) -> tuple[str, bool]:
    """(runtime, quantized) for a model on `device` under RERANKER_RUNTIME `setting`:
    auto → torch on CUDA/MPS; on the CPU ONNX Runtime, int8 when the model's export says int8
    kept its held-out quality (onnx_export.record_int8_judgment), else float32."""
    if setting not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {setting!r}")
    if setting == "torch":
        return "torch", False
    if setting == "onnx":
        return "onnxruntime", False
    if setting == "onnx-int8":
        return "onnxruntime", True
    if device != "cpu":
        return "torch", False
    return "onnxruntime", int8_allowed
