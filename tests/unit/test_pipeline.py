"""The indexing pipeline's parts that need no service: chunk planning against the model's limit
and reconcile_index's arguments (through real workers: tests/integration/test_pipeline.py)."""
from __future__ import annotations

import pytest
from django.conf import settings
from django.core.management import call_command

from indexer.chunking import load_tokenizer
from indexer.embedding import load_embedding_model
from indexer.models import Collection, Document
from indexer.pipeline import plan_chunks

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = settings.EMBEDDING_MODEL


def test_chunks_fit_the_model_with_the_title():
    collection = Collection(name="t", slug="t", chunk_size=4096, chunk_overlap=32)
    long_title = "A very long title " * 40
    doc = Document(pk=1, collection=collection, external_id="x", title=long_title[:500], text="word " * 4000,
                   content_hash="h")
    tokenizer = load_tokenizer(MODEL)
    model = load_embedding_model(MODEL)
    planned = plan_chunks([doc], collection, MODEL)
    assert len(planned) > 5
    for item in planned:
        assert item.embed_text.startswith("A very long title")
        assert len(tokenizer(item.embed_text)["input_ids"]) <= model.max_seq_length


def test_reconcile_index_rejects_unknown_collection():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="unknown collection"):
        call_command("reconcile_index", "no-such-collection")
