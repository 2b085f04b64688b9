"""Who may search a new collection: settings.DEFAULT_COLLECTION_VISIBILITY (superusers only unless
set otherwise), `import_corpus --visibility/--group`, and the demo, which is public. The search
filter itself, through the real Elasticsearch: tests/integration/test_access.py."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError

from indexer.models import Collection, Document
from tests.support.files import write_beir
from tests.support.workers import ROOT

pytestmark = pytest.mark.django_db

DOCS = [{"_id": "1", "title": "Payroll", "text": "Salaries of the board, confidential."}]


@pytest.fixture
def folder(tmp_path):
    return write_beir(tmp_path / "beir", DOCS)


def import_corpus(slug, folder, *args, **options):
    call_command("import_corpus", slug, str(folder), *args, no_chunk_count=True, **options)


def test_a_new_collection_is_for_superusers_only_by_default(folder, capsys, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        import_corpus("payroll", folder, "--create")
    collection = Collection.objects.get(slug="payroll")
    assert collection.visibility == Collection.Visibility.GROUPS and not collection.groups.exists()
    assert "Visibility groups, none selected: only superusers may search it." in capsys.readouterr().out
    # The same default anywhere a collection is made: in code, and the admin's add form.
    assert Collection(name="x", slug="x").visibility == Collection.Visibility.GROUPS


def test_the_default_comes_from_the_setting(folder, settings, admin_client, django_capture_on_commit_callbacks):
    settings.DEFAULT_COLLECTION_VISIBILITY = "authenticated"
    with django_capture_on_commit_callbacks():
        import_corpus("members", folder, "--create")
    assert Collection.objects.get(slug="members").visibility == Collection.Visibility.AUTHENTICATED
    form = admin_client.get("/admin/indexer/collection/add/").content.decode()
    assert '<option value="authenticated" selected>' in form


def test_visibility_and_groups_on_the_command_line(folder, capsys, django_capture_on_commit_callbacks):
    Group.objects.create(name="finance")
    Group.objects.create(name="board")
    with django_capture_on_commit_callbacks():
        import_corpus("open", folder, "--create", "--visibility", "public")
        import_corpus("finance", folder, "--create", "--group", "finance", "--group", "board")
        import_corpus("signed-in", folder, "--create", visibility="authenticated")
    assert Collection.objects.get(slug="open").visibility == Collection.Visibility.PUBLIC
    finance = Collection.objects.get(slug="finance")
    assert finance.visibility == Collection.Visibility.GROUPS  # implied by --group
    assert sorted(finance.groups.values_list("name", flat=True)) == ["board", "finance"]
    assert Collection.objects.get(slug="signed-in").visibility == Collection.Visibility.AUTHENTICATED
    out = capsys.readouterr().out
    assert "Visibility public: anyone may search it." in out
    assert "Visibility groups: members of board, finance (and superusers) may search it." in out


@pytest.mark.parametrize("args, options, error", [
    (["--visibility", "secret"], {}, "invalid choice: 'secret'"),  # the command line (argparse)
    ([], {"visibility": "secret"}, "unknown visibility 'secret'; choose one of public, authenticated, groups"),
    (["--group", "nobody"], {}, "no group named 'nobody'; create it first"),
    (["--group", "finance", "--visibility", "public"], {}, "groups only apply to visibility 'groups'"),
])
def test_bad_visibility_or_group_creates_nothing(folder, args, options, error):
    Group.objects.create(name="finance")
    with pytest.raises(CommandError, match=error):
        import_corpus("bad", folder, "--create", *args, **options)
    assert not Collection.objects.filter(slug="bad").exists() and not Document.objects.exists()


def test_an_existing_collection_keeps_its_visibility(folder, tmp_path, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        import_corpus("kept", folder, "--create", "--visibility", "authenticated")
    more = write_beir(tmp_path / "more", [{"_id": "2", "title": "", "text": "Another memo."}])
    with pytest.raises(CommandError, match=r"exists with visibility authenticated: .*change them on its page in the admin"):
        import_corpus("kept", more, "--visibility", "public")
    collection = Collection.objects.get(slug="kept")
    assert collection.visibility == Collection.Visibility.AUTHENTICATED and collection.documents.count() == 1
    with django_capture_on_commit_callbacks():
        import_corpus("kept", more, "--visibility", "authenticated")  # the same: no objection
    assert collection.documents.count() == 2


def test_the_demo_is_public(tmp_path, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setenv("DEMO_DATASET", str(write_beir(tmp_path / "scifact", DOCS)))
    with django_capture_on_commit_callbacks():
        call_command("load_demo", verbosity=0)
    assert Collection.objects.get(slug="scifact").visibility == Collection.Visibility.PUBLIC
    # A later start keeps what an admin chose since.
    Collection.objects.filter(slug="scifact").update(visibility=Collection.Visibility.AUTHENTICATED)
    call_command("load_demo", verbosity=0)
    assert Collection.objects.get(slug="scifact").visibility == Collection.Visibility.AUTHENTICATED


def test_a_bad_default_stops_every_process_at_start():
    env = dict(os.environ, DEFAULT_COLLECTION_VISIBILITY="everyone")
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert "DEFAULT_COLLECTION_VISIBILITY must be one of public, authenticated, groups, not 'everyone'" in result.stderr
