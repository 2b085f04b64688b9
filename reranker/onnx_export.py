"""A cross-encoder directory exported to ONNX, for ONNX Runtime on CPUs.

    <model dir>/onnx/model.onnx        float32, ONNX Runtime's transformer fusions applied
    <model dir>/onnx/model_int8.onnx   the same, dynamically quantised to int8 weights
    <model dir>/onnx/export.json       what the files were made from, their checksums, and
                                       whether int8 may be used (`int8`, set by `judge_int8`)

sentence-transformers' own ONNX backend exports through optimum-onnx, which requires an older
transformers than this project's; this uses `torch.onnx.export` (the TorchScript exporter) on
the model as the torch path runs it (`CrossEncoder(features)["scores"]`, head and pooling
included) and onnxruntime's own optimiser and quantiser. Attention is exported in its "eager"
form because that is the pattern onnxruntime's optimiser fuses into one Attention operator.

Django-free: training (reranker/training.py) scores its held-out queries through it.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FOLDER = "onnx"
FP32 = "model.onnx"
INT8 = "model_int8.onnx"
MANIFEST = "export.json"
OPSET = 17
# Inputs a BERT-like tokenizer gives; models without token types (RoBERTa...) export without it.
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# An int8 model is used only if its held-out nDCG@10 is at most this far below float32's.
INT8_TOLERANCE = 0.005


class ExportError(RuntimeError):
    """The model cannot be exported (or its export cannot be used); the message says why."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_fingerprint(model_dir: Path) -> str:
    """Checksum of the files that decide the model's outputs (weights, config, tokenizer)."""
    digest = hashlib.sha256()
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and (path.suffix in {".safetensors", ".bin", ".json", ".txt", ".model"}) \
                and path.name not in {"training.json", "fusion.json"}:
            digest.update(path.name.encode())
            digest.update(_sha256(path).encode())
    return digest.hexdigest()


@dataclass
class ExportState:
    folder: Path
    manifest: dict

    @property
    def int8_allowed(self) -> bool:
        return bool((self.manifest.get("int8") or {}).get("allowed"))

    @property
    def int8_reason(self) -> str:
        return (self.manifest.get("int8") or {}).get("reason") or "int8 not judged on held-out queries"


def export_folder(model_dir: str | Path) -> Path:
    return Path(model_dir) / FOLDER


def read_export(model_dir: str | Path) -> ExportState:
    """The export of `model_dir` if it is complete and intact; ExportError saying what is wrong
    otherwise (missing, damaged file, or made from other weights)."""
    model_dir = Path(model_dir)
    folder = export_folder(model_dir)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"no usable ONNX export in {folder} ({type(exc).__name__}: {exc})") from None
    for name in (FP32, INT8):
        path = folder / name
        if name not in files or not path.is_file():
            raise ExportError(f"{path} is missing")
        if _sha256(path) != files[name]:
            raise ExportError(f"{path} is damaged (checksum differs from {MANIFEST})")
    if manifest.get("source") != weights_fingerprint(model_dir):
        raise ExportError(f"{folder} was exported from other weights than those in {model_dir}")
    return ExportState(folder, manifest)


def _scores_module(model, input_names):
    """A torch module: token tensors in, one raw score per pair out (what CrossEncoder.predict
    returns with an identity activation), for the exporter to trace."""
    import torch

    class Scores(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(dict(zip(input_names, inputs)))["scores"].reshape(-1)

    return Scores()


def _load_for_export(model_dir: Path):
    from sentence_transformers import CrossEncoder

    try:
        model = CrossEncoder(str(model_dir), device="cpu", model_kwargs={"attn_implementation": "eager"})
    except (OSError, ValueError, TypeError) as exc:
        raise ExportError(f"cannot load {model_dir} as a cross-encoder: {exc}") from None
    if model.num_labels != 1:
        raise ExportError(f"{model_dir} has {model.num_labels} outputs; a reranker needs exactly one")
    model.eval()
    return model


def _optimize(source: Path, target: Path, config) -> None:
    """onnxruntime's transformer optimiser (fused Attention, LayerNorm, Gelu) where it knows
    the architecture; otherwise the graph is kept as exported (ONNX Runtime still applies its
    generic optimisations when it loads it)."""
    try:
        from onnxruntime.transformers import optimizer

        optimized = optimizer.optimize_model(
            str(source), model_type="bert",
            num_heads=getattr(config, "num_attention_heads", 0) or 0,
            hidden_size=getattr(config, "hidden_size", 0) or 0)
        optimized.save_model_to_file(str(target))
    except Exception as exc:  # an architecture the optimiser does not handle: unfused but correct
        log.warning("onnx export: transformer optimiser skipped (%s: %s)", type(exc).__name__, exc)
        shutil.copyfile(source, target)


def _quantize(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel weight scales: on the CPU demo model the int8 logits correlate 0.989 with
    # float32 against 0.967 per-tensor, for about 10% more time (docs/relevance.md).
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def export(model_dir: str | Path, force: bool = False) -> ExportState:
    """Export `model_dir` (a cross-encoder directory) unless an intact export of the same
    weights exists. Written into a temporary folder and moved into place, so a reader never
    sees half a folder; a damaged or stale export is replaced."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ExportError(f"{model_dir} is not a directory (the ONNX runtime needs a local model directory)")
    # Several worker processes may load the same model at once: one exports, the others wait
    # and then read its export.
    with open(model_dir / ".onnx-export.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force:
            try:
                return read_export(model_dir)
            except ExportError as problem:
                if export_folder(model_dir).exists():
                    log.warning("onnx export: rebuilding: %s", problem)
        return _export(model_dir)


@contextlib.contextmanager
def _quiet():
    """onnxruntime's optimiser and quantiser log every fusion at INFO and generic advice at
    WARNING, partly on the root logger."""
    loggers = [logging.getLogger(name) for name in ("", "fusion_base", "onnx_model", "onnx_model_bert")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _export(model_dir: Path) -> ExportState:
    # The tracer warns about Python conditions it freezes (attention-mask padding checks that
    # are constant for an encoder); the export is checked against torch by tests/unit/test_onnx.py.
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _export_files(model_dir)


def _export_files(model_dir: Path) -> ExportState:
    import torch

    started = time.perf_counter()
    model = _load_for_export(model_dir)
    sample = model.tokenizer(["a query"] * 2, ["a passage of text", "another"], padding=True,
                             truncation="longest_first", return_tensors="pt")
    names = [name for name in INPUT_NAMES if name in sample]
    inputs = tuple(sample[name] for name in names)
    module = _scores_module(model, names).eval()
    work = Path(tempfile.mkdtemp(prefix=".onnx-", dir=model_dir))
    try:
        raw = work / "raw.onnx"
        with torch.inference_mode():
            torch.onnx.export(module, inputs, str(raw), input_names=names, output_names=["scores"],
                              dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "scores": {0: "batch"}},
                              opset_version=OPSET, dynamo=False)
        _optimize(raw, work / FP32, getattr(model, "config", None) or model[0].auto_model.config)
        raw.unlink()
        _quantize(work / FP32, work / INT8)
        previous = {}
        try:
            previous = json.loads((export_folder(model_dir) / MANIFEST).read_text())
        except (OSError, ValueError):
            pass
        source = weights_fingerprint(model_dir)
        manifest = {
            "source": source, "inputs": names, "opset": OPSET,
            "files": {name: _sha256(work / name) for name in (FP32, INT8)},
            "torch": torch.__version__, "onnxruntime": _ort_version(),
            "seconds": round(time.perf_counter() - started, 1),
            # A judgment of int8 stays valid for the same weights only.
            "int8": previous.get("int8") if previous.get("source") == source else None,
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        target = export_folder(model_dir)
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    log.info("onnx export of %s in %.1f s", model_dir, time.perf_counter() - started)
    return read_export(model_dir)


def record_int8_judgment(model_dir: str | Path, float32_ndcg: float, int8_ndcg: float, queries: int,
                         tolerance: float = INT8_TOLERANCE) -> dict:
    """Record in export.json whether int8 may serve this model: its held-out nDCG@10 within
    `tolerance` of float32's."""
    state = read_export(model_dir)
    allowed = int8_ndcg >= float32_ndcg - tolerance
    judgment = {
        "allowed": allowed, "float32_ndcg@10": round(float32_ndcg, 4), "int8_ndcg@10": round(int8_ndcg, 4),
        "queries": queries, "tolerance": tolerance,
        "reason": (f"held-out nDCG@10 int8 {int8_ndcg:.4f} vs float32 {float32_ndcg:.4f} on {queries} queries "
                   f"({'within' if allowed else 'more than'} {tolerance} below)"),
    }
    state.manifest["int8"] = judgment
    (state.folder / MANIFEST).write_text(json.dumps(state.manifest, indent=2) + "\n")
    return judgment


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
