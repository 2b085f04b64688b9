"""The device (`pick_device`: the bi-encoder's, indexer/embedding.py, the rerank worker's and
training's alike) and the numeric precision of the cross-encoder, on every device:

- CUDA: float16 weights (the worker) or bfloat16 autocast (training): tensor cores.
- CPU with native bfloat16 (AVX512-BF16 or AMX, e.g. AMD Zen 4, Intel Sapphire Rapids):
  bfloat16 autocast: about twice as fast as float32 at the same ranking (figures in
  docs/relevance.md, "Measurements behind the code"). Autocast keeps softmax and layer norms in
  float32.
- Other CPUs: float32 (bfloat16 without hardware support is emulated, and slower).

Django-free on purpose: reranker/training.py runs as a plain script on a GPU machine.
"""
from __future__ import annotations

import contextlib
import functools

PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def pick_device(preference: str = "auto") -> str:
    """cuda when present, else mps, else cpu; an explicit preference wins."""
    if preference and preference != "auto":
        return preference
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU flags (Linux /proc/cpuinfo) include AVX512-BF16 or AMX-BF16."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    return False


def resolve_precision(device: str, preference: str = "auto") -> str:
    """The precision to run at on `device` ("cpu", "cuda", "cuda:1", "mps")."""
    if preference not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {preference!r}")
    if preference != "auto":
        return preference
    if device.startswith("cuda"):
        return "float16"
    if device == "cpu" and cpu_has_native_bf16():
        return "bfloat16"
    return "float32"


def autocast(device: str, precision: str):
    """A context that runs the model's matrix products at `precision` on `device` (autocast,
    for float32 weights; the rerank worker on CUDA converts its weights to float16 instead)."""
    import torch

    if precision == "bfloat16":
        return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)
    if precision == "float16" and device.startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()
