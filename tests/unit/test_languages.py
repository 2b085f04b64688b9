"""`import_corpus --language`: a new collection's language, and an existing one's kept (searching
by language through the real Elasticsearch: tests/integration/test_languages.py)."""
from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from indexer.analysis import LANGUAGES
from indexer.models import Collection, Document
from tests.support.files import write_beir

pytestmark = pytest.mark.django_db


def test_import_corpus_language(tmp_path, django_capture_on_commit_callbacks):
    folder = write_beir(tmp_path, [{"_id": "1", "title": "医学", "text": "我们研究医学和生物学"}])
    documents = Document.objects.count()
    with pytest.raises(CommandError) as raised:
        call_command("import_corpus", "bad-lang", str(folder), create=True, language="fr")
    message = str(raised.value)
    assert "unknown language 'fr'" in message and all(code in message for code in LANGUAGES)
    assert "nothing was imported" in message
    assert not Collection.objects.filter(slug="bad-lang").exists() and Document.objects.count() == documents

    with django_capture_on_commit_callbacks():
        call_command("import_corpus", "zh-import", str(folder), create=True, language="zh", no_chunk_count=True)
    collection = Collection.objects.get(slug="zh-import")
    assert collection.language == "zh" and collection.documents.count() == 1
    # An existing collection keeps its language: asking for another is an error, nothing imported.
    more = write_beir(tmp_path / "more", [{"_id": "2", "title": "", "text": "医生学习新的手术技术"}])
    with pytest.raises(CommandError, match=r"exists with language 'zh', not 'en'.*rebuild_index zh-import --language en"):
        call_command("import_corpus", "zh-import", str(more), language="en")
    assert collection.documents.count() == 1
    with django_capture_on_commit_callbacks():
        call_command("import_corpus", "zh-import", str(more), language="zh", no_chunk_count=True)
    assert collection.documents.count() == 2
    # Without --language, --create makes an English collection.
    with django_capture_on_commit_callbacks():
        call_command("import_corpus", "en-import", str(folder), create=True, no_chunk_count=True)
    assert Collection.objects.get(slug="en-import").language == "en"
