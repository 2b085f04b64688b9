"""Tasks of the `embed` queue."""
from celery import shared_task


@shared_task(name="indexer.tasks.ping", bind=True)
def ping(self) -> dict:
    """A round trip through an embed worker (health checks and tests)."""
    return {"queue": self.request.delivery_info.get("routing_key"), "worker": self.request.hostname}
