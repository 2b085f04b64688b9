"""Pseudo-only training (train_reranker --pseudo-only): which titles stand for queries, the
held-out-only split, a collection without usable titles refused with the reason, and a tiny real
run whose install is decided by silver queries, as its model card says."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from django.core.management import CommandError

from indexer.models import Collection, Document
from relevance.collection_training import PSEUDO_ONLY_MIN_QUERIES, mine
from relevance.pseudo_queries import looks_like_title
from reranker.training import JudgedQuery, TrainingData, TrainingSettings, save, train
from tests.unit.test_training import DOCUMENTS, QUERIES, TINY


@pytest.mark.parametrize("title, text, expected", [
    ("Telomerase activity in adult stem cells", "Stem cells keep their telomeres long...", True),
    ("report_2020_final", "Quarterly figures.", False),
    ("Annual report.pdf", "Quarterly figures.", False),
    ("Introduction", "Some text.", False),                       # one word
    ("2020-01-05 12:00 13/44", "Log lines.", False),             # mostly digits
    ("Telomere length and ageing", "Telomere length and ageing. Telomeres shorten...", False),  # the first line
    ("x " * 31, "text", False),                                  # too long for a query
])
def test_which_titles_look_like_titles(title, text, expected):
    assert looks_like_title(title, text) is expected


def test_heldout_only_data_holds_out_every_answerable_query():
    data = TrainingData(queries=QUERIES + [JudgedQuery("no answer", {"car-1": 0}, ["car-1"])], documents=DOCUMENTS,
                        heldout_only=True, heldout_kind="silver")
    assert data.split(0.2, 13) == ([], QUERIES)


@pytest.mark.django_db
def test_a_collection_without_usable_titles_is_refused_with_the_reason():
    collection = Collection.objects.create(name="Files", slug="files")
    for i in range(PSEUDO_ONLY_MIN_QUERIES + 5):
        doc = Document(collection=collection, external_id=f"f{i}", title=f"scan_{i:04d}.pdf", text=f"Text {i}")
        doc.refresh_hash()
        doc.save()
    with pytest.raises(CommandError, match=r"nothing trained, no reranker installed: of the 55 documents of "
                                           r"'files', 0 gave a title that reads like a query .*; 0 gave a leading "
                                           r"sentence .*; 0 gave key terms"):
        mine(collection, "hybrid", 10, 0, 13, None, pseudo_only=True)


def test_tiny_pseudo_only_run_is_decided_by_silver_queries(tmp_path):
    torch.set_num_threads(1)
    # The "pseudo-queries" here are the toy queries: four trained on, two held out as silver.
    silver, trained = [replace(q, kind="sentence") for q in QUERIES[:2]], [replace(q, kind="title") for q in QUERIES[2:]]
    data = TrainingData(queries=silver, documents=DOCUMENTS, pseudo_queries=trained, first_stage="hand-made",
                        mode="hybrid", heldout_only=True, heldout_kind="silver")
    result = train(data, TrainingSettings(**TINY), echo=lambda line: None, log_every=2)
    assert result.data_summary["train_queries"] == 0 and result.data_summary["pseudo_queries"] == 4
    assert result.data_summary["pseudo_query_kinds"] == "4 title"
    assert result.heldout["queries"] == 2 and result.heldout["kind"] == "silver"
    card = (save(result, tmp_path / "toy", "toy", "no (test)") / "README.md").read_text()
    assert ("These decided the install: silver queries, pseudo-queries (2 sentence) held out and never trained on"
            in card)
