"""Tasks of the `rerank` queue."""
import time

from celery import shared_task

from .cross_encoder import configured_model, load_reranker
from .speed import write_speed
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
    loads_before = load_reranker.cache_info().misses
    reranker = load_reranker(model_id)
    loaded_now = load_reranker.cache_info().misses > loads_before
    scoring = time.perf_counter()
    logits = reranker.score(query, passages)
    seconds = time.perf_counter() - scoring
    if passages and not loaded_now:
        write_speed(reranker, len(passages) / max(seconds, 1e-6), self.request.hostname)
    return {
        "logits": [float(x) for x in logits],
        **reranker.describe(),
        "fusion": reranker.fusion.to_dict(),
        "predict_ms": round((time.perf_counter() - started) * 1000, 2),
        "worker": self.request.hostname,
        # True when this call had to load the model (the worker's warm-up did not cover it).
        "loaded_now": loaded_now,
    }


@shared_task(name="reranker.tasks.warm_up")
def warm_up(model_ids: list[str]) -> dict[str, str]:
    """Load newly installed rerankers before a search needs them (one pool process per message)."""
    return warm_up_models(model_ids)
