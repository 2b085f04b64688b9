"""Access control: a collection that is not public never reaches a user who may not see it,
through the page, the API, totals, highlights or pagination.

The private collection's documents match the query better than the public ones, and the first
stage returns only SEARCH_DEPTH=5 chunks: if access were checked by dropping hits after the
search, the public results would be crowded out (wrong totals, empty pages). The filter inside
the Elasticsearch query returns every visible match.
"""
from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group, User

from indexer.models import Collection
from tests.support.searching import add_documents, build_reranker, drop_collections, index_now, search_settings

pytestmark = pytest.mark.django_db
MODES = ("semantic", "keyword", "hybrid")
QUERY = "quokka island behaviour"
SECRET_WORD = "zanzibarite"


@pytest.fixture(scope="module")
def world(es, django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        lab, other = Group.objects.create(name="acc-lab"), Group.objects.create(name="acc-other")
        public = Collection.objects.create(name="Public notes", slug="c-pub", visibility=Collection.Visibility.PUBLIC)
        members = Collection.objects.create(name="Members notes", slug="c-members",
                                            visibility=Collection.Visibility.AUTHENTICATED)
        secret = Collection.objects.create(name="Secret lab", slug="c-secret", visibility=Collection.Visibility.GROUPS)
        secret.groups.add(lab)
        add_documents(public, [(f"p{i}", f"Field note {i}", f"A quokka was seen near the harbour on day {i}.", {})
                               for i in range(3)])
        add_documents(members, [(f"m{i}", f"Member note {i}", f"Quokka island counts, season {i}.", {})
                                for i in range(2)])
        add_documents(secret, [
            (f"s{i}", f"Quokka island behaviour {SECRET_WORD} {i}",
             f"Quokka island behaviour study {SECRET_WORD}: quokka behaviour on the island, quokka groups, "
             f"island quokka behaviour observed in trial {i}.", {}) for i in range(8)])
        index_now(es, public, members, secret)
        users = {
            "outsider": User.objects.create_user("acc-outsider", password="x"),
            "member": User.objects.create_user("acc-member", password="x"),
            "staff": User.objects.create_user("acc-staff", password="x", is_staff=True),
            "root": User.objects.create_superuser("acc-root", password="x"),
        }
        users["outsider"].groups.add(other)
        users["member"].groups.add(lab)
        yield {"public": public, "members": members, "secret": secret, "users": users}
        for user in users.values():
            user.delete()
        lab.delete()
        other.delete()
        drop_collections(es, public, members, secret)


@pytest.fixture
def as_user(client, settings, world, rerank_worker):
    search_settings(settings, build_reranker())
    settings.SEARCH_DEPTH = 5

    def login(name):
        client.logout()
        if name != "anonymous":
            client.force_login(world["users"][name])
        return client

    return login


def all_pages(client, **params) -> tuple[list[dict], dict]:
    """Every result of every page (k=1), and the first page's body."""
    first = client.get("/api/search", {**params, "k": 1, "page": 1})
    assert first.status_code == 200, first.content
    body = first.json()
    results = list(body["results"])
    for page in range(2, body["pages"] + 1):
        more = client.get("/api/search", {**params, "k": 1, "page": page})
        assert more.status_code == 200
        assert SECRET_WORD not in more.content.decode()
        results += more.json()["results"]
    assert len(results) == body["total"]
    return results, body


EXPECTED = {  # user -> collections whose documents they must get (all of them: depth 5 is enough)
    "anonymous": {"c-pub": 3},
    "outsider": {"c-pub": 3, "c-members": 2},
    "staff": {"c-pub": 3, "c-members": 2},  # staff status alone opens no collection
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("user", sorted(EXPECTED))
def test_private_documents_never_reach_users_outside(as_user, user, mode):
    client = as_user(user)
    response = client.get("/api/search", {"q": QUERY, "mode": mode, "k": 10})
    assert response.status_code == 200
    raw = response.content.decode()
    assert SECRET_WORD not in raw and "c-secret" not in raw
    body = response.json()
    counts = {}
    for r in body["results"]:
        counts[r["collection"]] = counts.get(r["collection"], 0) + 1
    # Every visible match is there, and the total counts only them.
    want = EXPECTED[user]
    assert counts == want and body["total"] == sum(want.values())
    results, _ = all_pages(client, q=QUERY, mode=mode)
    assert {r["collection"] for r in results} == set(want)

    page = client.get("/", {"q": QUERY, "mode": mode}).content.decode()
    assert SECRET_WORD not in page and "c-secret" not in page and "Secret lab" not in page


@pytest.mark.parametrize("mode", MODES)
def test_group_member_and_superuser_see_the_private_collection(as_user, mode):
    for user in ("member", "root"):
        client = as_user(user)
        body = client.get("/api/search", {"q": QUERY, "mode": mode, "k": 10}).json()
        assert body["total"] == 5  # SEARCH_DEPTH chunks, mostly private ones
        secret = [r for r in body["results"] if r["collection"] == "c-secret"]
        assert len(secret) >= 3 and all(SECRET_WORD in r["title"] for r in secret)
        assert SECRET_WORD in client.get("/", {"q": QUERY, "mode": mode}).content.decode()
        only = client.get("/api/search", {"q": QUERY, "mode": mode, "collection": "c-secret"})
        assert only.status_code == 200 and only.json()["collections"] == ["c-secret"]


@pytest.mark.parametrize("user", ["anonymous", "outsider", "staff"])
def test_naming_a_private_collection_looks_like_a_missing_one(as_user, user):
    client = as_user(user)
    hidden = client.get("/api/search", {"q": QUERY, "collection": "c-secret"})
    missing = client.get("/api/search", {"q": QUERY, "collection": "c-nothing"})
    assert hidden.status_code == missing.status_code == 400
    assert hidden.json()["error"].replace("c-secret", "X") == missing.json()["error"].replace("c-nothing", "X")
    page = client.get("/", {"q": QUERY, "collection": "c-secret"})
    assert page.status_code == 400 and SECRET_WORD not in page.content.decode()


def test_a_members_snapshot_is_never_served_to_others(as_user):
    query = QUERY + " observed"  # a query nobody searched before in this run
    member = as_user("member")
    assert member.get("/api/search", {"q": query, "mode": "keyword", "k": 1}).json()["total"] == 5
    anonymous = as_user("anonymous")
    second = anonymous.get("/api/search", {"q": query, "mode": "keyword", "k": 1, "page": 2})
    assert second.status_code == 200 and SECRET_WORD not in second.content.decode()
    assert second.json()["from_snapshot"] is False and second.json()["total"] == 3


def test_visibility_changes_apply_at_once(as_user, world):
    anonymous = as_user("anonymous")
    first = anonymous.get("/api/search", {"q": QUERY, "mode": "keyword", "k": 1}).json()
    assert first["total"] == 3
    Collection.objects.filter(pk=world["public"].pk).update(visibility=Collection.Visibility.AUTHENTICATED)
    later = anonymous.get("/api/search", {"q": QUERY, "mode": "keyword", "k": 1, "page": 2})
    assert later.status_code == 200 and later.json()["total"] == 0 and later.json()["results"] == []
    assert json.loads(later.content)["collections"] == []


def test_judgment_buttons_only_for_staff(as_user):
    for user, shown in (("anonymous", False), ("outsider", False), ("staff", True)):
        page = as_user(user).get("/", {"q": QUERY, "mode": "keyword"}).content.decode()
        assert ('name="grade" value="3"' in page) is shown, user  # the grade buttons, 0..3


def test_admin_requires_staff(as_user):
    client = as_user("outsider")
    assert client.get("/admin/").status_code == 302
    client = as_user("staff")
    assert client.get("/admin/").status_code == 200
