"""The API's JSON answers: a body, or `{"error": message}` with its status; never cached."""
from __future__ import annotations

from django.http import JsonResponse
from django.utils.cache import add_never_cache_headers


def json_response(body, status: int = 200, headers: dict | None = None) -> JsonResponse:
    response = JsonResponse(body, status=status, safe=False, json_dumps_params={"ensure_ascii": False})
    for name, value in (headers or {}).items():
        response[name] = value
    add_never_cache_headers(response)
    return response


def error_response(status: int, message: str, headers: dict | None = None) -> JsonResponse:
    return json_response({"error": message}, status, headers)
