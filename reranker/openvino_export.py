"""A cross-encoder directory exported for CPU workers: OpenVINO models next to the weights.

    <model dir>/openvino/model.onnx          the model traced by torch (float32), what the rest is made from
    <model dir>/openvino/model.xml, .bin     OpenVINO float32
    <model dir>/openvino/model_int8.xml, .bin  int8, quantised by NNCF on calibration pairs (only
                                             when some were given: `quantize`)
    <model dir>/openvino/calibration.jsonl   those pairs, so a damaged int8 model is remade alike
    <model dir>/openvino/export.json         what the files were made from, their checksums, and
                                             whether int8 may serve (`int8`, `record_int8_judgment`)

sentence-transformers' own ONNX/OpenVINO backends export through optimum, which requires an
older transformers than this project's; this uses `torch.onnx.export` (the TorchScript
exporter) on the model as the torch path runs it (`CrossEncoder(features)["scores"]`, head and
pooling included), OpenVINO's converter, and NNCF's post-training quantisation (static int8,
its transformer preset). Why OpenVINO and not ONNX Runtime: docs/relevance.md ("CPU runtime").

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FOLDER = "openvino"
TRACED = "model.onnx"
FP32 = "model.xml"
INT8 = "model_int8.xml"
CALIBRATION = "calibration.jsonl"
MANIFEST = "export.json"
OPSET = 17
# Inputs a BERT-like tokenizer gives; models without token types (RoBERTa...) export without it.
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# An int8 model is used only if its held-out nDCG@10 is at most this far below float32's.
INT8_TOLERANCE = 0.005
# Calibration pairs NNCF computes activation ranges on (it needs a few hundred), a few per query.
CALIBRATION_PAIRS = 256
CALIBRATION_PAIRS_PER_QUERY = 8


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


def _weights_file(model_xml: str) -> str:
    return model_xml.removesuffix(".xml") + ".bin"


@dataclass
class ExportState:
    folder: Path
    manifest: dict

    @property
    def has_int8(self) -> bool:
        return INT8 in self.manifest.get("files", {})

    @property
    def int8_allowed(self) -> bool:
        return self.has_int8 and bool((self.manifest.get("int8") or {}).get("allowed"))

    @property
    def int8_reason(self) -> str:
        if not self.has_int8:
            return ("no int8 model (int8 is calibrated on a collection: train_reranker on a CPU, "
                    "or export_reranker DIR --judge-on COLLECTION)")
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
        if not isinstance(files, dict):
            raise TypeError("files is not a mapping")
        int(manifest["max_length"])  # written by this version; older exports are made again
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"no usable OpenVINO export in {folder} ({type(exc).__name__}: {exc})") from None
    required = {TRACED, FP32, _weights_file(FP32)}
    if INT8 in files:
        required |= {INT8, _weights_file(INT8), CALIBRATION}
    for name in sorted(required):
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


def _locked(model_dir: Path):
    """Several worker processes may load the same model at once: one exports, the others wait
    and then read its export."""
    lock = open(model_dir / ".openvino-export.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def export(model_dir: str | Path, force: bool = False) -> ExportState:
    """Export `model_dir` (a cross-encoder directory) unless an intact export of the same
    weights exists. A damaged or stale export is made again, its int8 model too when its
    calibration pairs survived. Written into a temporary folder and moved into place, so a
    reader never sees half a folder."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ExportError(f"{model_dir} is not a directory (the CPU runtime needs a local model directory)")
    with _locked(model_dir):
        return _intact_export(model_dir, force)


def quantize(model_dir: str | Path, pairs: Sequence[tuple[str, str]]) -> ExportState:
    """Make the int8 model from calibration `pairs` (query, passage), like those the model will
    rerank, beside the float32 model of the current export (made first if it is missing);
    replaces an earlier int8 model and its judgment."""
    model_dir = Path(model_dir)
    pairs = [(str(q), str(p)) for q, p in pairs]
    if not pairs:
        raise ExportError("int8 needs calibration pairs; none were given")
    with _locked(model_dir):
        state = _intact_export(model_dir, force=False)
        with _work_folder(model_dir) as work:
            for name in (TRACED, FP32, _weights_file(FP32)):
                _link_or_copy(state.folder / name, work / name)
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
            return _finish(model_dir, work, state.manifest["inputs"], state.manifest["max_length"], tokenizer,
                           pairs, state.manifest, time.perf_counter())


def _intact_export(model_dir: Path, force: bool) -> ExportState:
    if not force:
        try:
            return read_export(model_dir)
        except ExportError as problem:
            if export_folder(model_dir).exists():
                log.warning("openvino export: rebuilding: %s", problem)
    return _write_export(model_dir, _surviving_calibration(model_dir))


def _surviving_calibration(model_dir: Path) -> list[tuple[str, str]] | None:
    try:
        lines = (export_folder(model_dir) / CALIBRATION).read_text(encoding="utf-8").splitlines()
        pairs = [tuple(json.loads(line)) for line in lines if line.strip()]
    except (OSError, ValueError):
        return None
    return [(q, p) for q, p in pairs] or None


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # the same bytes: no need to copy a weights file
    except OSError:
        shutil.copyfile(source, target)


@contextlib.contextmanager
def _work_folder(model_dir: Path):
    """A temporary folder beside the export, removed unless `_finish` moved it into place;
    a failure of the tracer, OpenVINO's converter or NNCF becomes an ExportError that says which."""
    work = Path(tempfile.mkdtemp(prefix=".openvino-", dir=model_dir))
    try:
        yield work
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"cannot export {model_dir}: {type(exc).__name__}: {exc}") from exc
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def _write_export(model_dir: Path, calibration: list[tuple[str, str]] | None) -> ExportState:
    import openvino

    started = time.perf_counter()
    model = _load_for_export(model_dir)
    previous = {}
    try:
        previous = json.loads((export_folder(model_dir) / MANIFEST).read_text())
    except (OSError, ValueError):
        pass
    with _work_folder(model_dir) as work:
        names = _trace(model, work / TRACED)
        openvino.save_model(openvino.convert_model(str(work / TRACED)), str(work / FP32), compress_to_fp16=False)
        return _finish(model_dir, work, names, model.max_seq_length, model.tokenizer, calibration, previous, started)


def _finish(model_dir: Path, work: Path, names: list[str], max_length: int, tokenizer,
            calibration: list[tuple[str, str]] | None, previous: dict, started: float) -> ExportState:
    """`work` holds the float32 files: add the int8 model when there are calibration pairs,
    write the manifest and move the folder into place."""
    if calibration:
        _quantize(work, tokenizer, names, max_length, calibration)
    source = weights_fingerprint(model_dir)
    written = [TRACED, FP32, _weights_file(FP32)]
    if calibration:
        written += [INT8, _weights_file(INT8), CALIBRATION]
    same_int8 = (previous.get("source") == source and calibration is not None
                 and previous.get("calibration_sha256") == _pairs_digest(calibration))
    manifest = {
        "source": source, "inputs": names, "max_length": max_length, "opset": OPSET,
        "files": {name: _sha256(work / name) for name in written},
        "calibration_pairs": len(calibration or []),
        "calibration_sha256": _pairs_digest(calibration) if calibration else None,
        "versions": _versions(),
        "seconds": round(time.perf_counter() - started, 1),
        # A judgment of int8 holds for the same weights and calibration only.
        "int8": previous.get("int8") if same_int8 else None,
    }
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    target = export_folder(model_dir)
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target} is in the way of the export: a file, not a folder")
    if target.is_dir():
        shutil.rmtree(target)
    os.replace(work, target)
    log.info("openvino export of %s in %.1f s (%s)", model_dir, time.perf_counter() - started,
             f"float32 and int8 on {len(calibration)} pairs" if calibration else "float32")
    return read_export(model_dir)


def _trace(model, path: Path) -> list[str]:
    import torch

    sample = model.tokenizer(["a query"] * 2, ["a passage of text", "another"], padding=True,
                             truncation="longest_first", return_tensors="pt")
    names = [name for name in INPUT_NAMES if name in sample]
    module = _scores_module(model, names).eval()
    # The tracer warns about Python conditions it freezes (attention-mask padding checks that
    # are constant for an encoder); tests/unit/test_cpu_runtime.py checks the export against torch.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(sample[name] for name in names), str(path), input_names=names,
                          output_names=["scores"],
                          dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "scores": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    return names


def _quantize(work: Path, tokenizer, names: list[str], max_length: int, pairs: list[tuple[str, str]]) -> None:
    import nncf
    import openvino

    from .pairs import pair_batches

    nncf.set_log_level(logging.ERROR)
    batches = [features for _, features in pair_batches(tokenizer, pairs, max_length, 8)]
    dataset = nncf.Dataset(batches, lambda features: {name: features[name] for name in names})
    quantized = nncf.quantize(openvino.convert_model(str(work / TRACED)), dataset, subset_size=len(batches),
                              model_type=nncf.ModelType.TRANSFORMER)
    openvino.save_model(quantized, str(work / INT8), compress_to_fp16=False)
    with (work / CALIBRATION).open("w", encoding="utf-8") as handle:
        for pair in pairs:
            handle.write(json.dumps(pair, ensure_ascii=False) + "\n")


def _pairs_digest(pairs: Sequence[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps(list(map(list, pairs)), ensure_ascii=False).encode()).hexdigest()


def calibration_pairs(queries, documents: dict[str, str], count: int = CALIBRATION_PAIRS,
                      per_query: int = CALIBRATION_PAIRS_PER_QUERY) -> list[tuple[str, str]]:
    """(query, passage) pairs as the reranker will see them: the first-stage candidates of
    `queries` (training queries, never the held-out ones the int8 model is judged on), a few
    per query, up to `count`."""
    pairs = []
    for query in queries:
        for key in list(dict.fromkeys(query.candidates))[:per_query]:
            if key in documents:
                pairs.append((query.query, documents[key]))
        if len(pairs) >= count:
            break
    return pairs[:count]


def record_int8_judgment(model_dir: str | Path, float32_ndcg: float, int8_ndcg: float, queries: int,
                         tolerance: float = INT8_TOLERANCE) -> dict:
    """Record in export.json whether int8 may serve this model: its held-out nDCG@10 within
    `tolerance` of float32's."""
    state = read_export(model_dir)
    if not state.has_int8:
        raise ExportError(f"{state.folder} has no int8 model to judge")
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


def _versions() -> dict:
    import nncf
    import openvino
    import torch

    return {"torch": torch.__version__, "openvino": openvino.__version__, "nncf": nncf.__version__}
