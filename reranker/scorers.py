"""Scoring (query, passage) pairs with a cross-encoder, on one of two runtimes:

- `TorchScorer`: the model in torch (CUDA float16, CPU bfloat16 autocast where the CPU has it,
  else float32; common/precision.py).
- `OpenVinoScorer`: its OpenVINO export (reranker/openvino_export.py) on the CPU, float32 or
  int8.

Both tokenise every pair once with the model's own tokenizer, sort the pairs by length and pad
each batch only to its longest pair, so short passages do not pay for long ones; the scores
come back in the order given. `pick_runtime` decides which one a worker uses.

Django-free: training scores its held-out queries through the same classes.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .openvino_export import FP32, INT8, ExportError, read_export
from .pairs import pair_batches
from common.precision import autocast

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "openvino", "openvino-int8")


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


class OpenVinoScorer:
    """The OpenVINO export of a cross-encoder on the CPU."""

    runtime = "openvino"
    device = "cpu"

    def __init__(self, model_dir: str | Path, quantized: bool, max_length: int, batch_size: int = 32,
                 threads: int = 1):
        import openvino
        from transformers import AutoTokenizer

        state = read_export(model_dir)  # ExportError when missing or damaged
        if quantized and not state.has_int8:
            raise ExportError(f"{state.folder}: {state.int8_reason}")
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            # float32 means float32, also on CPUs where OpenVINO would pick bfloat16 by itself.
            "INFERENCE_PRECISION_HINT": "f32",
            # Rerank workers share the cores with the web and indexing processes.
            "ENABLE_CPU_PINNING": False,
        }
        path = state.folder / (INT8 if quantized else FP32)
        self.model = openvino.Core().compile_model(str(path), "CPU", config)
        self.request = self.model.create_infer_request()
        self.inputs = [port.get_any_name() for port in self.model.inputs]
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
            outputs = self.request.infer({name: features[name] for name in self.inputs})
            results.append((positions, np.array(outputs[0], dtype=np.float32).reshape(-1)))
        return _gather(results, len(pairs))


def pairs_per_second(scorer, pairs: int = 16) -> float:
    """Pairs per second of `scorer` on full-length pairs (the slow case): the median of three
    timed rounds after one untimed one."""
    import time

    batch = [("calibration query", " ".join(["word"] * scorer.max_length))] * pairs
    scorer.score_pairs(batch)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        scorer.score_pairs(batch)
        times.append(time.perf_counter() - started)
    return pairs / sorted(times)[1]


def pick_runtime(device: str, setting: str, int8_allowed: bool) -> tuple[str, bool]:
    """(runtime, quantized) for a model on `device` under RERANKER_RUNTIME `setting`:
    auto → torch on CUDA/MPS; on the CPU OpenVINO, int8 when the model's export says int8
    kept its held-out quality (openvino_export.record_int8_judgment), else float32."""
    if setting not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {setting!r}")
    if setting == "torch":
        return "torch", False
    if setting == "openvino":
        return "openvino", False
    if setting == "openvino-int8":
        return "openvino", True
    if device != "cpu":
        return "torch", False
    return "openvino", int8_allowed
