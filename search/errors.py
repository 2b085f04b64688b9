"""The one error of the query path that is not the caller's fault."""

ENGINE_DOWN = "the search index is not answering"
EMBEDDER_DOWN = "the service that reads queries is not answering"
MISCONFIGURED = "the search service is misconfigured"
INDEX_MISSING = "the index of a collection is missing and must be rebuilt by an administrator"


class SearchBackendError(Exception):
    """The search engine (or the query embedding worker) failed; the view answers 503.

    `public` says in plain words which part failed, for anyone; the exception's own text (the
    client's error, hosts and ports) goes to the log only: a visitor has no use for it and an
    attacker some."""

    def __init__(self, detail: str, public: str = ENGINE_DOWN):
        super().__init__(detail)
        self.public = public
