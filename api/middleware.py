"""API keys on every /api/ request: `Authorization: Bearer <key>` is checked before the view
(and before the rate limit, which then counts per key: searchsite/ratelimit.py reads
`request.api_key_id`). A refused key is a 401 at once. An accepted one sets:

- `request.api_key`: the ApiKey (api/access.py decides what it may touch);
- `request.collection_scope`: the collections a search with it covers (its own and the public
  ones), which the query path reads instead of the user's (search/views.py);
- `request.user`: anonymous, so a browser session sent along adds nothing to the key's rights.

Other paths ignore the header (/healthz and /metrics have tokens of their own).
"""
from __future__ import annotations

from django.contrib.auth.models import AnonymousUser

from .access import Caller
from .keys import KeyRefused, authenticate
from .responses import error_response

API_PATH_PREFIX = "/api/"


class ApiKeyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        header = request.META.get("HTTP_AUTHORIZATION")
        if header is not None and request.path_info.startswith(API_PATH_PREFIX):
            try:
                key = authenticate(header)
            except KeyRefused as exc:
                return error_response(401, str(exc), {"WWW-Authenticate": 'Bearer realm="api", error="invalid_token"'})
            request.api_key, request.api_key_id = key, key.pk
            request.user = AnonymousUser()
            request.collection_scope = Caller(key, request.user).searchable()
        return self.get_response(request)
