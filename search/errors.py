"""The one error of the query path that is not the caller's fault."""


class SearchBackendError(Exception):
    """Elasticsearch (or the query embedding worker) failed; the view answers 503."""
