"""Tasks of the `rerank` queue."""
import time

from celery import shared_task

from .cross_encoder import configured_model, load_cross_encoder, score_pairs
from .warm_up import warm_up_models


@shared_task(name="reranker.tasks.ping", bind=True)
def ping(self) -> dict:
    """A round trip through a rerank worker (health checks and tests)."""
    return {"queue": self.request.delivery_info.get("routing_key"), "worker": self.request.hostname}


@shared_task(name="reranker.tasks.rerank", bind=True)
def rerank(self, query: str, passages: list[str], model: str = "") -> dict:
    """Score (query, passage) pairs with the cross-encoder; one raw logit per passage, in order.

    `model` is a collection's own reranker; empty uses this worker's RERANKER_MODEL setting.
    Raises RerankerUnavailable when neither is set: the web process shows "not reranked".
    """
    model_id = configured_model(model)
    started = time.perf_counter()
    loads_before = load_cross_encoder.cache_info().misses
    loaded = load_cross_encoder(model_id)
    logits = score_pairs(model_id, query, passages)
    return {
        "logits": [float(x) for x in logits],
        "model": model_id,
        "device": str(loaded.device),
        "precision": loaded.precision,
        "fusion": loaded.fusion.to_dict(),
        "predict_ms": round((time.perf_counter() - started) * 1000, 2),
        "worker": self.request.hostname,
        "max_length": loaded.max_seq_length,
        # True when this call had to load the model (the worker's warm-up did not cover it).
        "loaded_now": load_cross_encoder.cache_info().misses > loads_before,
    }


@shared_task(name="reranker.tasks.warm_up")
def warm_up(model_ids: list[str]) -> dict[str, str]:
    """Load newly installed rerankers before a search needs them (one pool process per message)."""
    return warm_up_models(model_ids)
