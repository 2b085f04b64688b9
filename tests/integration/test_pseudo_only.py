"""Pseudo-only mining through the real first stage (Elasticsearch): with no judgments, title
pseudo-queries are split into trained ones and held-out silver ones that decide; with judgments,
every judged query decides and none is trained on (the training itself: tests/unit/test_pseudo_only.py)."""
from __future__ import annotations

import pytest

from indexer.models import Collection, Document
from relevance import collection_training
from relevance.collection_training import BODY, mine
from relevance.models import Judgment
from tests.support.searching import SCIENCE, add_documents, drop_collections, index_now

pytestmark = pytest.mark.django_db


class Lines(list):
    def write(self, line):
        self.append(line)


def test_pseudo_only_mining_holds_out_silver_queries_or_lets_judgments_decide(es, monkeypatch):
    # The toy corpus has a handful of documents, not the 50 titles a real collection needs.
    monkeypatch.setattr(collection_training, "PSEUDO_ONLY_MIN_QUERIES", 3)
    collection = Collection.objects.create(name="Pseudo toy", slug="pseudo-toy")
    add_documents(collection, [(f"s{i}", title, text, {}) for i, (title, text) in enumerate(SCIENCE)])
    index_now(es, collection)
    try:
        titles = dict(Document.objects.filter(collection=collection).values_list("external_id", "title"))
        out = Lines()
        data = mine(collection, "hybrid", 20, 0, 1, out, pseudo_only=True, heldout=0.34)
        assert data.heldout_only and data.heldout_kind == "silver"
        assert data.queries and data.pseudo_queries
        assert len(data.queries) + len(data.pseudo_queries) == len(SCIENCE)
        assert not {q.query for q in data.queries} & {q.query for q in data.pseudo_queries}
        for query in data.queries + data.pseudo_queries:
            (positive,) = query.positives
            assert query.query == titles[positive[len(BODY):]] and query.kind == "title"
            assert query.candidates and all(c.startswith(BODY) for c in query.candidates)  # the real first stage
        assert data.split(0.34, 1) == ([], data.queries)
        assert any("held out as silver queries (never trained on) decide the install" in line for line in out)

        document = Document.objects.get(collection=collection, external_id="s0")
        Judgment.objects.create(collection=collection, query="telomerase in stem cells", document=document, grade=1)
        data = mine(collection, "hybrid", 20, 0, 1, Lines(), pseudo_only=True, heldout=0.34)
        assert data.heldout_kind == "judged" and [q.query for q in data.queries] == ["telomerase in stem cells"]
        assert len(data.pseudo_queries) == len(SCIENCE) and data.split(0.34, 1)[0] == []
    finally:
        drop_collections(es, collection)


def test_a_collection_without_titles_gets_leading_sentence_pseudo_queries(es, monkeypatch):
    monkeypatch.setattr(collection_training, "PSEUDO_ONLY_MIN_QUERIES", 2)
    collection = Collection.objects.create(name="No titles", slug="no-titles")
    add_documents(collection, [(f"n{i}", "", text, {}) for i, (_, text) in enumerate(SCIENCE)])
    index_now(es, collection)
    try:
        data = mine(collection, "hybrid", 20, 0, 1, Lines(), pseudo_only=True, heldout=0.34)
        made = data.queries + data.pseudo_queries
        assert data.heldout_kind == "silver" and {q.kind for q in made} <= {"sentence", "terms"}
        by_document = {q.positives[0][len(BODY):]: q for q in made}
        first = by_document["n0"]
        assert (first.kind, first.query) == ("sentence", "Telomerase adds telomeric repeats to chromosome ends.")
        # The positive is the text after the sentence; the real first stage found candidates.
        assert data.documents[BODY + "n0"].startswith("Stem cells keep high telomerase activity")
        assert first.candidates and all(c.startswith(BODY) for c in first.candidates)
    finally:
        drop_collections(es, collection)
