"""Tasks of the `rerank` queue."""
import logging
import time

from celery import shared_task
from django.conf import settings

from common.service_metrics import count_shared

from .backlog import note_process, remove_request
from .cross_encoder import configured_model, load_reranker
from .deadlines import score_before
from .speed import read_speed, write_speed
from .warm_up import warm_up_models

log = logging.getLogger(__name__)


@shared_task(name="reranker.tasks.ping", bind=True)
def ping(self) -> dict:
    """A round trip through a rerank worker (health checks and tests)."""
    return {"queue": self.request.delivery_info.get("routing_key"), "worker": self.request.hostname}


@shared_task(name="reranker.tasks.rerank", bind=True)
def rerank(self, query: str, passages: list[str], model: str = "", deadline: float | None = None,
           answer_by: float | None = None) -> dict:
    """Score (query, passage) pairs with the cross-encoder; one raw logit per passage, in order.

    `model` is a collection's own reranker; empty uses this worker's RERANKER_MODEL setting.
    `deadline` (Unix time, set by search/rerank_client.py): after it the web process no longer
    waits, so a request taken after it is dropped unscored, and the pairs scored are cut to those
    that end before it (reranker/deadlines.py): the logits may cover only a prefix of `passages`.
    `answer_by` (Unix time, a round trip after `deadline`): when the web process stops waiting;
    an answer scored after it is counted late (for nobody).
    Raises RerankerUnavailable when neither model is set: the web process shows "not reranked".
    """
    model_id = configured_model(model)
    try:
        return _score(self, query, passages, model_id, deadline, answer_by)
    finally:
        # Answered, dropped or failed: no longer waiting (reranker/backlog.py).
        remove_request(model_id, self.request.id, len(passages))


def _score(task, query: str, passages: list[str], model_id: str, deadline: float | None,
           answer_by: float | None) -> dict:
    started = time.perf_counter()
    if deadline is not None and time.time() >= deadline:
        # Taken too late (the queue was longer than the web process expected): no CPU spent.
        count_shared("rerank_worker_requests_total", outcome="expired")
        return {"logits": [], "offered": len(passages), "stopped": "expired", "worker": task.request.hostname}
    loads_before = load_reranker.cache_info().misses
    reranker = load_reranker(model_id)
    loaded_now = load_reranker.cache_info().misses > loads_before
    scoring = time.perf_counter()
    measured_speed = read_speed(model_id)
    scored = score_before(deadline, passages, lambda part: reranker.score(query, part), measured_speed,
                          settings.RERANKER_BATCH_SIZE, answer_by=answer_by)
    seconds = time.perf_counter() - scoring
    note_process(model_id)
    if scored.logits and not loaded_now:
        write_speed(reranker, len(scored.logits) / max(seconds, 1e-6), task.request.hostname)
    # late: scored, but answered after the web process stopped waiting (the target is none);
    # overran: past the deadline, within the round trip the web process still waits.
    if scored.overrun:
        log.warning("scored %.3f s after its deadline%s (%d pairs planned at %.0f pairs/s): batches %s",
                    scored.overrun, ", for nobody" if scored.late else ", still awaited",
                    len(passages), measured_speed or 0,
                    ", ".join(f"{n} pairs in {took:.3f} s" for n, took in scored.batches))
    outcome = "late" if scored.late else "overran" if scored.overrun else scored.stopped or "scored"
    count_shared("rerank_worker_requests_total", outcome=outcome)
    count_shared("rerank_worker_pairs_total", len(scored.logits))
    return {
        "logits": scored.logits,
        "offered": len(passages),
        "stopped": scored.stopped,
        **reranker.describe(),
        "fusion": reranker.fusion.to_dict(),
        "predict_ms": round((time.perf_counter() - started) * 1000, 2),
        "worker": task.request.hostname,
        # True when this call had to load the model (the worker's warm-up did not cover it).
        "loaded_now": loaded_now,
    }


@shared_task(name="reranker.tasks.warm_up")
def warm_up(model_ids: list[str]) -> dict[str, str]:
    """Load newly installed rerankers before a search needs them (one pool process per message)."""
    return warm_up_models(model_ids)
