"""The bound on searches in progress per web process (searchsite/admission.py): past it, 503 at
once with Retry-After, JSON for the API, a page for the search page; the slot is given back when
the search ends, also when it raises. The same through a real gunicorn: tests/integration/test_load_shedding.py."""
from __future__ import annotations

import json

import pytest
from django.http import HttpResponse
from django.test import RequestFactory
from django.urls import resolve

from searchsite.admission import SearchAdmissionMiddleware


def request_for(path: str, **params):
    request = RequestFactory().get(path, params)
    request.resolver_match = resolve(path)
    return request


def test_past_the_bound_a_search_is_refused_at_once(settings):
    settings.SEARCH_MAX_IN_FLIGHT, settings.SEARCH_RETRY_AFTER = 2, 3
    middleware = SearchAdmissionMiddleware(lambda request: HttpResponse("ok"))
    held = [request_for("/api/search", q="a"), request_for("/api/search", q="b")]
    assert [middleware.process_view(r, None, (), {}) for r in held] == [None, None]
    assert middleware.in_flight == 2

    refused = middleware.process_view(request_for("/api/search", q="c"), None, (), {})
    assert refused.status_code == 503 and refused["Retry-After"] == "3"
    assert "busy" in json.loads(refused.content)["error"] and "no-cache" in refused["Cache-Control"]
    page = middleware.process_view(request_for("/", q="c"), None, (), {})
    assert page.status_code == 503 and page["Retry-After"] == "3" and b"The search is busy" in page.content

    # The empty search form and other views are never counted.
    assert middleware.process_view(request_for("/"), None, (), {}) is None
    assert middleware.process_view(request_for("/healthz"), None, (), {}) is None
    assert middleware.in_flight == 2


def test_the_slot_is_given_back_when_the_search_ends_or_fails(settings):
    settings.SEARCH_MAX_IN_FLIGHT = 1

    def view_that_fails(request):
        raise RuntimeError("boom")

    for get_response in (lambda request: HttpResponse("ok"), view_that_fails):
        middleware = SearchAdmissionMiddleware(get_response)
        request = request_for("/api/search", q="a")
        assert middleware.process_view(request, None, (), {}) is None and middleware.in_flight == 1
        try:
            middleware(request)
        except RuntimeError:
            pass
        assert middleware.in_flight == 0
        assert middleware.process_view(request_for("/api/search", q="b"), None, (), {}) is None


def test_zero_means_no_bound(settings):
    settings.SEARCH_MAX_IN_FLIGHT = 0
    middleware = SearchAdmissionMiddleware(lambda request: HttpResponse("ok"))
    assert all(middleware.process_view(request_for("/api/search", q=str(i)), None, (), {}) is None for i in range(50))
