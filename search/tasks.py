"""Query embedding on the `embed` queue (setting QUERY_EMBEDDING=queue): the embed workers have
the bi-encoder loaded already, so the web process does not need torch or the model in memory."""
from celery import shared_task

from .query_vectors import EMBED_TASK, encode_queries


@shared_task(name=EMBED_TASK)
def embed_queries(texts: list[str], model_id: str) -> list[list[float]]:
    """Unit-length vectors of `texts` under `model_id`, in order."""
    return encode_queries(texts, model_id)
