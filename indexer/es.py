"""The one place that builds an Elasticsearch client from the settings."""
from __future__ import annotations

import functools

from django.conf import settings
from elasticsearch import Elasticsearch


@functools.lru_cache(maxsize=1)
def get_client() -> Elasticsearch:
    kwargs: dict = {
        "request_timeout": settings.ELASTICSEARCH_TIMEOUT,
        "verify_certs": settings.ELASTICSEARCH_VERIFY_CERTS,
    }
    if settings.ELASTICSEARCH_CA_CERTS:
        kwargs["ca_certs"] = settings.ELASTICSEARCH_CA_CERTS
    if settings.ELASTICSEARCH_API_KEY:
        kwargs["api_key"] = settings.ELASTICSEARCH_API_KEY
    elif settings.ELASTICSEARCH_PASSWORD:
        kwargs["basic_auth"] = (settings.ELASTICSEARCH_USERNAME, settings.ELASTICSEARCH_PASSWORD)
    return Elasticsearch(settings.ELASTICSEARCH_URL, **kwargs)
