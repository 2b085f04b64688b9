"""Tasks of the `rerank` queue."""
from celery import shared_task


@shared_task(name="reranker.tasks.ping", bind=True)
def ping(self) -> dict:
    """A round trip through a rerank worker (health checks and tests)."""
    return {"queue": self.request.delivery_info.get("routing_key"), "worker": self.request.hostname}
