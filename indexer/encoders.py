"""The bi-encoder as indexing and search use it: unit-length float32 vectors of documents and
queries, each with the model's own prompt, through torch or OpenVINO.

    TorchEncoder     sentence-transformers on torch: CUDA (fp16) or CPU (float32)
    OpenVinoEncoder  the same model traced once to ONNX and run by OpenVINO on the CPU, float32
                     (inference precision pinned, so a CPU with bf16/AMX computes what an
                     AVX2-only one does), or its int8 model: NNCF post-training quantisation
                     calibrated on documents, served only where `manage.py quantize_embedding`
                     measured held-out nDCG@10 within INT8_TOLERANCE of float32 (int8.json
                     beside the export records it)

Both read the model directory as sentence-transformers writes it (modules.json, the pooling
config, config_sentence_transformers.json's prompts), so any Hugging Face id or directory works
on either; `load_encoder` picks the runtime (EMBEDDING_RUNTIME: auto is torch on CUDA and
OpenVINO on a CPU). Texts are encoded longest first, in batches of similar length.

An OpenVINO export lives under <MODELS_DIR>/openvino/<name>-<fingerprint of the weights>/, made
on first use under a file lock (a second process waits, then reuses it); a changed model gets a
new fingerprint and so a new export.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.file_lock import file_lock

import numpy as np

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "openvino", "openvino-int8")
EXPORT_VERSION = 1
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
INT8_XML = "encoder-int8.xml"
INT8_RECORD = "int8.json"
INT8_TOLERANCE = 0.005  # nDCG@10 int8 may lose against float32 on held-out queries
# Padded tokens per OpenVINO batch: on a 2-core CPU, 8 texts of 512 tokens ran 1.9x faster than
# 64 (the activations of a smaller batch stay in cache; docs/models.md), while short texts
# still fill a batch of `batch_size`.
OPENVINO_BATCH_TOKENS = 4096
# Queries are padded to a multiple of QUERY_PAD_TO tokens, so that a few input shapes serve every
# query and each is prepared at load (widths up to QUERY_WARM_UP_TOKENS) rather than by a search:
# first-seen shapes made query p95 35 ms against 14 ms once seen (docs/models.md).
QUERY_PAD_TO = 16
QUERY_WARM_UP_TOKENS = 96


class EncoderError(RuntimeError):
    """The model cannot be run by the runtime asked for; the message says why."""


@dataclass(frozen=True)
class ModelLayout:
    """What sentence-transformers does around the transformer, read from the model directory."""

    pooling: str  # "cls" or "mean"
    normalize: bool
    max_seq_length: int
    prompts: dict[str, str] = field(default_factory=dict)


def read_layout(model_dir: Path) -> ModelLayout:
    def read(name: str) -> dict:
        path = model_dir / name
        return json.loads(path.read_text()) if path.is_file() else {}

    modules = read("modules.json") or []
    pooling, normalize = "mean", False
    for module in modules:
        kind = module.get("type", "")
        if kind.endswith("Pooling"):
            config = read(str(Path(module.get("path", "")) / "config.json"))
            if config.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif config.get("pooling_mode_mean_tokens", True):
                pooling = "mean"
            else:
                raise EncoderError(f"{model_dir}: pooling {config} is neither CLS nor mean; use EMBEDDING_RUNTIME=torch")
        elif kind.endswith("Normalize"):
            normalize = True
        elif not kind.endswith(("Transformer", "Pooling", "Normalize")):
            raise EncoderError(f"{model_dir}: module {kind} is not run by the OpenVINO encoder; use EMBEDDING_RUNTIME=torch")
    bert = read("sentence_bert_config.json")
    max_length = int(bert.get("max_seq_length") or read("tokenizer_config.json").get("model_max_length") or 512)
    prompts = {k: v for k, v in (read("config_sentence_transformers.json").get("prompts") or {}).items() if v}
    return ModelLayout(pooling=pooling, normalize=normalize, max_seq_length=min(max_length, 8192), prompts=prompts)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """float32 rows of length one (fp16 rounding or an unnormalised model leave norms off 1, and
    the index compares by dot product)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


class TorchEncoder:
    runtime = "torch"

    def __init__(self, model_id: str, path: str, device: str):
        from sentence_transformers import SentenceTransformer

        self.model_id = model_id
        self.device = device
        self.model = SentenceTransformer(path, device=device)
        self.precision = "float32"
        if device.startswith("cuda"):
            self.model.half()
            self.precision = "float16"
        self.tokenizer = self.model.tokenizer
        self.max_seq_length = self.model.max_seq_length
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dimension = get()

    def encode_documents(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return unit_rows(self.model.encode_document(texts, batch_size=batch_size, convert_to_numpy=True,
                                                    normalize_embeddings=True, show_progress_bar=False))

    def encode_queries(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return unit_rows(self.model.encode_query(texts, batch_size=batch_size, convert_to_numpy=True,
                                                 normalize_embeddings=True, show_progress_bar=False))


def weights_fingerprint(model_dir: Path) -> str:
    """Names, sizes and modification times of the weight and config files: cheap, and changed by
    any re-conversion or fine-tuning that writes them again."""
    digest = hashlib.sha256(f"v{EXPORT_VERSION}".encode())
    for path in sorted(model_dir.glob("*")):
        if path.is_file() and path.suffix in (".safetensors", ".bin", ".json", ".txt"):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return digest.hexdigest()[:16]


def export_dir(model_dir: Path, models_dir: Path) -> Path:
    return models_dir / "openvino" / f"{model_dir.name}-{weights_fingerprint(model_dir)}"


def export_openvino(model_dir: Path, models_dir: Path) -> Path:
    """The OpenVINO model (encoder.xml) of the transformer in `model_dir`, made if missing: traced
    by torch's TorchScript exporter to ONNX (inputs as the tokenizer gives them, output the last
    hidden state), converted by OpenVINO."""
    target = export_dir(model_dir, models_dir)
    xml = target / "encoder.xml"
    if xml.is_file() and (target / "export.json").is_file():
        return xml
    with file_lock(target.with_name(target.name + ".lock")):
        if xml.is_file() and (target / "export.json").is_file():
            return xml
        started = time.perf_counter()
        import openvino as ov
        import torch
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModel.from_pretrained(str(model_dir), torch_dtype=torch.float32).eval()
        sample = tokenizer(["a short text", "another text that is a little longer"], padding=True, return_tensors="pt")
        names = [n for n in INPUT_NAMES if n in sample]

        class LastHidden(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, *inputs):
                return self.inner(**dict(zip(names, inputs))).last_hidden_state

        work = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
        try:
            onnx_path = work / "encoder.onnx"
            with torch.no_grad():
                torch.onnx.export(LastHidden(model), tuple(sample[n] for n in names), str(onnx_path),
                                  input_names=names, output_names=["last_hidden_state"], opset_version=17,
                                  dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names},
                                                "last_hidden_state": {0: "batch", 1: "tokens"}},
                                  dynamo=False)
            ov.save_model(ov.convert_model(str(onnx_path)), str(work / "encoder.xml"))
            onnx_path.unlink()
            (work / "export.json").write_text(json.dumps({
                "source": str(model_dir), "inputs": names, "export_version": EXPORT_VERSION,
                "openvino": ov.__version__, "torch": torch.__version__,
                "seconds": round(time.perf_counter() - started, 1)}, indent=2))
            if target.exists():
                shutil.rmtree(target)
            work.rename(target)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
        log.info("exported %s to OpenVINO in %.1f s: %s", model_dir, time.perf_counter() - started, target)
    return xml


def cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def read_int8(xml: Path) -> dict:
    """The int8 record beside an export ({} when none was made)."""
    path = xml.parent / INT8_RECORD
    return json.loads(path.read_text()) if path.is_file() and (xml.parent / INT8_XML).is_file() else {}


def int8_reason(record: dict) -> str:
    if not record:
        return "no int8 model (manage.py quantize_embedding MODEL --judge-on BEIR-FOLDER makes and judges one)"
    judgment = record.get("judgment")
    if not judgment:
        return "the int8 model was not judged on held-out queries"
    return judgment["reason"]


class OpenVinoEncoder:
    runtime = "openvino"
    device = "cpu"

    def __init__(self, model_id: str, path: str, models_dir: Path, threads: int = 0, int8: bool | None = None):
        """`int8`: None serves the int8 model when its record allows it, True requires it, False
        never uses it."""
        import openvino as ov
        from transformers import AutoTokenizer

        model_dir = Path(path)
        if not model_dir.is_dir():
            raise EncoderError(f"{model_id!r} is not a local directory; the OpenVINO encoder runs installed models "
                               "(manage.py install_model) or directories; use EMBEDDING_RUNTIME=torch for hub ids")
        self.model_id = model_id
        self.layout = read_layout(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.max_seq_length = self.layout.max_seq_length
        xml = export_openvino(model_dir, models_dir)
        self.inputs = json.loads((xml.parent / "export.json").read_text())["inputs"]
        record = read_int8(xml)
        allowed = bool((record.get("judgment") or {}).get("allowed"))
        if int8 and not record:
            raise EncoderError(f"{model_id}: {int8_reason(record)}")
        use_int8 = bool(record) if int8 else (allowed if int8 is None else False)
        self.precision = "int8" if use_int8 else "float32"
        self.int8_reason = "" if use_int8 or int8 is False else int8_reason(record)
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": threads or cpu_threads()}
        self.compiled = ov.Core().compile_model(str(xml.parent / INT8_XML if use_int8 else xml), "CPU", config)
        self.dimension = int(self.compiled.output(0).get_partial_shape()[2].get_length())
        self._warm_up_query_widths()

    def _warm_up_query_widths(self) -> None:
        """Run each padded query width once: OpenVINO prepares its kernels for an input shape the
        first time it sees it (about 25 ms on 2 cores), which a search should not pay."""
        request = self.compiled.create_infer_request()
        for width in range(QUERY_PAD_TO, QUERY_WARM_UP_TOKENS + 1, QUERY_PAD_TO):
            ids = np.full((1, width), self.tokenizer.pad_token_id or 0, dtype=np.int64)
            features = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
            request.infer({name: features[name] for name in self.inputs})

    def _encode(self, texts: list[str], prompt: str, batch_size: int, pad_to: int | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        texts = [prompt + t for t in texts]
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=True, truncation=True,
                                                      max_length=self.max_seq_length)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        request = self.compiled.create_infer_request()
        for batch in token_budget_batches(order, lengths, batch_size):
            features = self.tokenizer([texts[i] for i in batch], padding=True, truncation=True,
                                      max_length=self.max_seq_length, pad_to_multiple_of=pad_to, return_tensors="np")
            request.infer({name: features[name].astype(np.int64) for name in self.inputs})
            hidden = request.get_output_tensor(0).data
            mask = features["attention_mask"].astype(np.float32)[:, :, None]
            if self.layout.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            out[batch] = pooled
        return unit_rows(out)

    def encode_documents(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return self._encode(texts, self.layout.prompts.get("document", ""), batch_size)

    def encode_queries(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return self._encode(texts, self.layout.prompts.get("query", ""), batch_size, pad_to=QUERY_PAD_TO)


def token_budget_batches(order: list[int], lengths: list[int], batch_size: int,
                         budget: int = OPENVINO_BATCH_TOKENS) -> list[list[int]]:
    """`order` (longest first) cut into batches of at most `batch_size` texts whose padded size
    (texts x the first one's tokens) stays within `budget`."""
    batches, start = [], 0
    while start < len(order):
        width = max(1, lengths[order[start]])
        size = max(1, min(batch_size, budget // width))
        batches.append(order[start:start + size])
        start += size
    return batches


def pick_runtime(setting: str, device: str) -> tuple[str, bool | None]:
    """(runtime, int8: None = as the model's int8 record allows, True = required, False = never).
    auto: torch off the CPU; on it OpenVINO, int8 where the record allows."""
    if setting not in RUNTIMES:
        raise ValueError(f"EMBEDDING_RUNTIME must be one of {', '.join(RUNTIMES)}, not {setting!r}")
    if setting.startswith("openvino") and not device.startswith("cpu"):
        raise EncoderError(f"EMBEDDING_RUNTIME={setting} runs on the CPU, not on {device}")
    if setting == "auto":
        return ("torch", False) if not device.startswith("cpu") else ("openvino", None)
    if setting == "torch":
        return "torch", False
    return "openvino", setting == "openvino-int8" or False


def calibration_batches(tokenizer, texts: list[str], max_length: int, batch_size: int = 8) -> list[dict]:
    features = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=max_length,
                          return_tensors="np")
        features.append({name: np.asarray(value, dtype=np.int64) for name, value in batch.items()})
    return features


def quantize_openvino(model_dir: Path, models_dir: Path, documents: list[str]) -> Path:
    """The int8 model of the export (encoder-int8.xml), calibrated on `documents` (with the
    model's document prompt); any earlier int8 model and its judgment are replaced."""
    import nncf
    import openvino as ov
    from transformers import AutoTokenizer

    xml = export_openvino(model_dir, models_dir)
    layout = read_layout(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    names = json.loads((xml.parent / "export.json").read_text())["inputs"]
    prompt = layout.prompts.get("document", "")
    batches = calibration_batches(tokenizer, [prompt + t for t in documents], layout.max_seq_length)
    with file_lock(xml.parent.with_name(xml.parent.name + ".lock")):
        started = time.perf_counter()
        nncf.set_log_level(logging.ERROR)
        dataset = nncf.Dataset(batches, lambda features: {name: features[name] for name in names})
        quantized = nncf.quantize(ov.Core().read_model(str(xml)), dataset, subset_size=len(batches),
                                  model_type=nncf.ModelType.TRANSFORMER)
        ov.save_model(quantized, str(xml.parent / INT8_XML), compress_to_fp16=False)
        (xml.parent / INT8_RECORD).write_text(json.dumps({
            "calibration_documents": len(documents), "nncf": nncf.__version__, "openvino": ov.__version__,
            "seconds": round(time.perf_counter() - started, 1), "judgment": None}, indent=2) + "\n")
    return xml.parent / INT8_XML


def record_int8_judgment(model_dir: Path, models_dir: Path, float32_ndcg: float, int8_ndcg: float, queries: int,
                         judged_on: str, speed: dict | None = None, tolerance: float = INT8_TOLERANCE) -> dict:
    """Record beside the export whether int8 may serve this model: held-out nDCG@10 within
    `tolerance` of float32's."""
    xml = export_dir(model_dir, models_dir) / "encoder.xml"
    record = read_int8(xml)
    if not record:
        raise EncoderError(f"{xml.parent} has no int8 model to judge")
    allowed = int8_ndcg >= float32_ndcg - tolerance
    record["judgment"] = {
        "allowed": allowed, "float32_ndcg@10": round(float32_ndcg, 4), "int8_ndcg@10": round(int8_ndcg, 4),
        "queries": queries, "judged_on": judged_on, "tolerance": tolerance, "speed": speed or {},
        "reason": (f"held-out nDCG@10 int8 {int8_ndcg:.4f} vs float32 {float32_ndcg:.4f} on {queries} queries of "
                   f"{judged_on} ({'within' if allowed else 'more than'} {tolerance} below)"),
    }
    (xml.parent / INT8_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record["judgment"]
