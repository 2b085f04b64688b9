"""The API without services: keys (only a hash stored, refused keys, `create_api_key`), who may
touch which collection, and every bad body of a POST of documents or a rerank answered with a
4xx and a message, nothing written. The same endpoints through the real stack (indexing by a real
embed worker, searches, reranks by a real rerank worker): tests/integration/test_api_keys.py."""
from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import URLPattern, get_resolver
from django.utils import timezone

from api.keys import authenticate, create_key, hash_key, KeyRefused
from api.models import ApiKey
from indexer.models import Collection, Document

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cols():
    return {slug: Collection.objects.create(name=slug.upper(), slug=slug, visibility=Collection.Visibility.GROUPS)
            for slug in ("alpha", "beta")}


@pytest.fixture
def keys(cols):
    return {
        "alpha-write": create_key("writer", [cols["alpha"]], can_write=True)[1],
        "alpha-read": create_key("reader", [cols["alpha"]])[1],
        "beta-write": create_key("other", [cols["beta"]], can_write=True)[1],
    }


def auth(key: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def post(client, key, slug, body, content_type="application/x-ndjson"):
    return client.post(f"/api/collections/{slug}/documents", data=body, content_type=content_type, **auth(key))


def ndjson(*docs) -> str:
    return "\n".join(d if isinstance(d, str) else json.dumps(d) for d in docs) + "\n"


def doc(n, **fields):
    return {"id": str(n), "title": f"Title {n}", "text": f"Text of document {n}.", **fields}


# --------------------------------------------------------------------------- keys


def test_only_a_hash_is_stored_and_the_key_authenticates(cols):
    row, key = create_key("app", [cols["alpha"]])
    stored = ApiKey.objects.filter(pk=row.pk).values().get()
    assert key not in json.dumps(stored, default=str)
    assert key.split(".")[1] not in json.dumps(stored, default=str)
    assert stored["key_hash"] == hash_key(key) and stored["prefix"] == key.split(".")[0]
    assert authenticate(f"Bearer {key}").pk == row.pk
    assert ApiKey.objects.get(pk=row.pk).last_used_at is not None


@pytest.mark.parametrize("header, words", [
    ("Basic dXNlcjpwYXNz", "must be 'Bearer <API key>'"),
    ("Bearer", "must be 'Bearer <API key>'"),
    ("Bearer nonsense", "unknown API key"),
    ("Bearer 0123456789ab." + "x" * 43, "unknown API key"),
    ("Bearer ключ", "unknown API key"),
])
def test_malformed_or_unknown_keys_are_refused(cols, header, words):
    with pytest.raises(KeyRefused, match=words):
        authenticate(header)


def test_a_right_prefix_with_a_wrong_secret_is_unknown(cols):
    _, key = create_key("app", [cols["alpha"]])
    prefix, secret = key.split(".")
    with pytest.raises(KeyRefused, match="unknown API key"):
        authenticate(f"Bearer {prefix}.{secret[::-1]}")


def test_revoked_expired_unknown_keys_answer_401_json(client, cols):
    row, key = create_key("app", [cols["alpha"]])
    assert client.get("/api/collections", **auth(key)).status_code == 200
    row.revoke()
    response = client.get("/api/collections", **auth(key))
    assert (response.status_code, response.json()) == (401, {"error": "this API key was revoked"})
    assert response["WWW-Authenticate"].startswith("Bearer")
    row2, key2 = create_key("old", [cols["alpha"]], expires_at=timezone.now() + timedelta(hours=1))
    ApiKey.objects.filter(pk=row2.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get("/api/search", {"q": "x"}, **auth(key2)).json() == {"error": "this API key has expired"}
    assert client.post("/api/rerank", {}, content_type="application/json",
                       **auth("abc")).json() == {"error": "unknown API key"}
    # Without a key or session: 401 on the endpoints that need one.
    assert client.get("/api/collections/alpha/documents/1").status_code == 401
    assert client.post("/api/rerank", {}, content_type="application/json").status_code == 401


def test_the_key_is_never_logged(client, cols, caplog):
    _, key = create_key("app", [cols["alpha"]], can_write=True)
    caplog.set_level("DEBUG")
    post(client, key, "alpha", ndjson(doc(1), "{bad"))
    client.get("/api/collections/alpha/documents/nope", **auth(key))
    client.get("/api/collections", **auth(key[:-1] + "A"))
    assert caplog.records  # something was logged (the write, the 404s)
    assert not any(key.split(".")[1] in record.getMessage() for record in caplog.records)


def test_create_api_key_prints_the_key_once(cols):
    out, err = StringIO(), StringIO()
    call_command("create_api_key", "sync job", "--collections", "alpha,beta", "--write", "--expires", "30d",
                 stdout=out, stderr=err)
    key = out.getvalue().strip()
    row = authenticate(f"Bearer {key}")
    assert row.name == "sync job" and row.can_write and sorted(row.collections.values_list("slug", flat=True)) == [
        "alpha", "beta"]
    assert timedelta(days=29) < row.expires_at - timezone.now() <= timedelta(days=30)
    assert key not in err.getvalue() and row.prefix in err.getvalue()
    for args, words in ([["--collections", "alpha,nope"], "no collection 'nope'"],
                        [["--collections", " , "], "at least one collection"],
                        [["--collections", "alpha", "--expires", "soon"], "--expires takes"],
                        [["--collections", "alpha", "--expires", "2001-01-01"], "in the past"]):
        with pytest.raises(CommandError, match=words):
            call_command("create_api_key", "x", *args, stdout=StringIO(), stderr=StringIO())
    assert ApiKey.objects.count() == 1


# --------------------------------------------------------------------------- documents


def test_ndjson_lines_each_get_their_result_in_order(client, cols, keys):
    body = ndjson(doc(1), "{not json", doc(2, metadata={"year": 2020}), doc(3, text="  "), [1, 2],
                  doc(4, metadata=[1]), doc("x" * 256), doc(5, extra=1), {"title": "no id", "text": "t"},
                  doc(2, text="Second version wins."))
    response = post(client, keys["alpha-write"], "alpha", body)
    assert response.status_code == 200, response.content
    answer = response.json()
    results = answer["results"]
    assert [(r["line"], r["result"]) for r in results] == [
        (1, "created"), (2, "error"), (3, "replaced"), (4, "error"), (5, "error"), (6, "error"), (7, "error"),
        (8, "error"), (9, "error"), (10, "created")]
    errors = {r["line"]: r["error"] for r in results if r["result"] == "error"}
    assert "not valid JSON" in errors[2]
    assert errors[4] == "empty text"
    assert "expected a JSON object" in errors[5]
    assert errors[6] == "'metadata' must be a JSON object, not list"
    assert "the limit is 255" in errors[7]
    assert "unknown field 'extra'" in errors[8]
    assert errors[9] == "no 'id' field"
    assert "line 10, which wins" in results[2]["note"] and "replaces line 3" in results[9]["note"]
    assert (answer["created"], answer["error"], answer["replaced"], answer["errors"]) == (2, 7, 1, True)
    stored = {d.external_id: d.text for d in Document.objects.filter(collection=cols["alpha"])}
    assert stored == {"1": "Text of document 1.", "2": "Second version wins."}

    # Again: unchanged (same content hash, not queued again), updated when the text changes.
    Document.objects.filter(collection=cols["alpha"]).update(status=Document.Status.INDEXED)
    again = post(client, keys["alpha-write"], "alpha", ndjson(doc(1), doc(2, text="Changed."))).json()
    assert [r["result"] for r in again["results"]] == ["unchanged", "updated"]
    statuses = dict(Document.objects.filter(collection=cols["alpha"]).values_list("external_id", "status"))
    assert statuses == {"1": "indexed", "2": "queued"}


def test_one_json_document(client, cols, keys):
    response = post(client, keys["alpha-write"], "alpha", json.dumps(doc(7)), "application/json")
    assert response.json()["results"] == [{"line": 1, "id": "7", "result": "created"}]
    response = post(client, keys["alpha-write"], "alpha", json.dumps(doc(8, text="")), "application/json")
    assert response.status_code == 400 and response.json()["results"][0]["error"] == "empty text"


@pytest.mark.parametrize("body, content_type, status, words", [
    (ndjson(doc(1)), "text/plain", 415, "application/x-ndjson"),
    (ndjson(doc(1)), "application/x-www-form-urlencoded", 415, "not 'application/x-www-form-urlencoded'"),
    (ndjson(doc(1)), "application/x-ndjson; charset=latin-1", 415, "must be UTF-8"),
    (" ", "application/x-ndjson", 400, "the body is empty"),
    ("\n\n", "application/x-ndjson", 400, "the body is empty"),
    ("{bad\n[\n", "application/x-ndjson", 400, "not valid JSON"),
    (b"\xff\xfe{}\n", "application/x-ndjson", 400, "not UTF-8"),
])
def test_bad_bodies_are_refused_and_nothing_is_written(client, cols, keys, body, content_type, status, words):
    response = post(client, keys["alpha-write"], "alpha", body, content_type)
    assert response.status_code == status, response.content
    assert words in json.dumps(response.json(), ensure_ascii=False)
    assert not Document.objects.exists()


def test_body_and_line_limits(client, settings, cols, keys):
    settings.API_DOCUMENTS_MAX_BYTES = 1000
    response = post(client, keys["alpha-write"], "alpha", ndjson(*(doc(n) for n in range(30))))
    assert response.status_code == 413 and "API_DOCUMENTS_MAX_BYTES" in response.json()["error"]
    settings.API_DOCUMENTS_MAX_BYTES, settings.API_DOCUMENTS_MAX_LINES = 10_000, 3
    response = post(client, keys["alpha-write"], "alpha", ndjson(*(doc(n) for n in range(4))))
    assert response.status_code == 413 and "the limit is 3" in response.json()["error"]
    assert not Document.objects.exists()


def test_keys_touch_only_their_collections(client, cols, keys):
    post(client, keys["alpha-write"], "alpha", ndjson(doc(1)))
    unknown = {"error": "unknown collection 'alpha'"}
    for response in (post(client, keys["beta-write"], "alpha", ndjson(doc(2))),
                     client.get("/api/collections/alpha/documents/1", **auth(keys["beta-write"])),
                     client.delete("/api/collections/alpha/documents/1", **auth(keys["beta-write"]))):
        assert (response.status_code, response.json()) == (404, unknown)
    # A collection that does not exist gets the same answer as one of another key.
    missing = client.get("/api/collections/gamma/documents/1", **auth(keys["beta-write"]))
    assert (missing.status_code, missing.json()) == (404, {"error": "unknown collection 'gamma'"})
    # Read-only: 403 on writes, reads work.
    for response in (post(client, keys["alpha-read"], "alpha", ndjson(doc(3))),
                     client.delete("/api/collections/alpha/documents/1", **auth(keys["alpha-read"]))):
        assert response.status_code == 403 and "read-only" in response.json()["error"]
    assert client.get("/api/collections/alpha/documents/1", **auth(keys["alpha-read"])).json()["id"] == "1"
    assert list(Document.objects.values_list("external_id", flat=True)) == ["1"]
    listed = client.get("/api/collections", **auth(keys["beta-write"])).json()["collections"]
    assert [c["slug"] for c in listed] == ["beta"] and listed[0]["documents"] == 0 and listed[0]["writable"]


def test_get_and_delete_a_document(client, cols, keys):
    post(client, keys["alpha-write"], "alpha", ndjson(doc("a/b", metadata={"year": 2021})))
    body = client.get("/api/collections/alpha/documents/a/b", **auth(keys["alpha-read"])).json()
    assert (body["id"], body["status"], body["metadata"], body["chunks"], body["error"]) == (
        "a/b", "queued", {"year": 2021}, 0, None)
    too_long = client.get("/api/collections/alpha/documents/" + "x" * 256, **auth(keys["alpha-read"]))
    assert too_long.status_code == 400 and "the limit is 255" in too_long.json()["error"]
    gone = client.delete("/api/collections/alpha/documents/a/b", **auth(keys["alpha-write"]))
    assert gone.json() == {"collection": "alpha", "id": "a/b", "result": "deleted"}
    assert not Document.objects.exists()
    assert client.get("/api/collections/alpha/documents/a/b", **auth(keys["alpha-read"])).status_code == 404
    assert client.put("/api/collections/alpha/documents/a/b", **auth(keys["alpha-write"])).status_code == 405


def test_staff_sessions_write_with_the_permission_and_csrf(cols):
    from django.test import Client

    staff = User.objects.create_user("editor", password="pw", is_staff=True)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff)
    url = "/api/collections/alpha/documents"
    assert browser.post(url, ndjson(doc(1)), content_type="application/x-ndjson").status_code == 403  # no permission
    staff.user_permissions.add(Permission.objects.get(codename="change_document"))
    staff.is_superuser = True  # sees every collection
    staff.save()
    refused = browser.post(url, ndjson(doc(1)), content_type="application/x-ndjson")
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    browser.get("/admin/")  # sets the csrftoken cookie
    token = browser.cookies["csrftoken"].value
    accepted = browser.post(url, ndjson(doc(1)), content_type="application/x-ndjson", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 200, accepted.content
    assert Document.objects.filter(collection=cols["alpha"], external_id="1").exists()


# --------------------------------------------------------------------------- rerank


@pytest.mark.parametrize("body, status, words", [
    ("not json", 400, "not valid JSON"),
    ([], 400, "must be a JSON object"),
    ({"query": "q", "documents": ["a"], "model": "x"}, 400, "unknown field 'model'"),
    ({"documents": ["a"]}, 400, "query: give the query"),
    ({"query": "  ", "documents": ["a"]}, 400, "query: give the query"),
    ({"query": "x" * 1001, "documents": ["a"]}, 400, "longer than 1000"),
    ({"query": "q"}, 400, "documents: give a non-empty list"),
    ({"query": "q", "documents": []}, 400, "documents: give a non-empty list"),
    ({"query": "q", "documents": ["a"] * 101}, 400, "at most 100 per request"),
    ({"query": "q", "documents": ["a", 3]}, 400, "documents[1]: must be a non-empty string"),
    ({"query": "q", "documents": ["a", " "]}, 400, "documents[1]: must be a non-empty string"),
    ({"query": "q", "documents": ["x" * 4001]}, 400, "documents[0]: 4001 characters; at most 4000"),
    ({"query": "q", "documents": ["a"], "top_n": 0}, 400, "top_n: a whole number"),
    ({"query": "q", "documents": ["a"], "top_n": "5"}, 400, "top_n: a whole number"),
    ({"query": "q", "documents": ["a"], "collection": "beta"}, 404, "unknown collection 'beta'"),
])
def test_bad_rerank_requests(client, cols, keys, body, status, words):
    data = body if isinstance(body, str) else json.dumps(body)
    response = client.post("/api/rerank", data, content_type="application/json", **auth(keys["alpha-read"]))
    assert response.status_code == status, response.content
    assert words in response.json()["error"]


def test_rerank_takes_json_only(client, cols, keys):
    response = client.post("/api/rerank", "query=q", content_type="text/plain", **auth(keys["alpha-read"]))
    assert response.status_code == 415


# --------------------------------------------------------------------------- schema


def test_the_openapi_schema_covers_every_api_endpoint():
    schema = yaml.safe_load((ROOT / "docs/openapi.yaml").read_text())
    documented = {(path, method.upper()) for path, item in schema["paths"].items() for method in item
                  if method in ("get", "post", "put", "delete", "patch")}
    import re

    routes = set()
    for pattern in get_resolver().url_patterns:
        for entry in getattr(pattern, "url_patterns", [pattern]):
            if isinstance(entry, URLPattern) and str(entry.pattern).startswith("api/"):
                path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(entry.pattern))
                routes.add(path)
    assert routes == {path for path, _ in documented}, routes ^ {path for path, _ in documented}
    assert ("/api/collections/{slug}/documents/{document_id}", "DELETE") in documented


# --------------------------------------------------------------------------- admin


def test_the_admin_shows_a_new_key_once_and_revokes(client, cols):
    admin = User.objects.create_superuser("boss", password="pw")
    client.force_login(admin)
    response = client.post("/admin/api/apikey/add/", {"name": "portal", "collections": [cols["alpha"].pk],
                                                      "can_write": "on", "expires_at_0": "", "expires_at_1": ""},
                           follow=True)
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    row = ApiKey.objects.get(name="portal")
    key = next(word for m in shown for word in m.split() if word.startswith(row.prefix + "."))
    assert authenticate(f"Bearer {key}").pk == row.pk and row.created_by == "boss" and row.can_write
    listing = client.get("/admin/api/apikey/").content.decode()
    assert row.prefix in listing and key not in listing
    client.post("/admin/api/apikey/", {"action": "revoke_keys", "_selected_action": [row.pk]})
    with pytest.raises(KeyRefused, match="revoked"):
        authenticate(f"Bearer {key}")
