"""The click model on hand-made logs: position bias (a click far down counts for more than one at
the top), skip-above, the examination threshold; the derivation from the real log tables into
implicit judgments, kept apart from staff grades, which win in collection_qrels; the admin's
confirm action."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.test import RequestFactory
from django.urls import reverse

from analytics.click_model import PROPENSITY_FLOOR, Impression, implied_grades, propensities
from analytics.click_judgments import derive_implicit_judgments
from analytics.search_log import log_search, record_click
from indexer.models import Collection, Document
from relevance.judgments import collection_qrels, query_id_for
from relevance.models import ImplicitJudgment, Judgment


def searches(n, shown, clicks_at=None):
    """`n` searches of "q" showing `shown`; clicks_at: {search number: ranks clicked}."""
    return [Impression("q", tuple(shown), 1, frozenset((clicks_at or {}).get(i, ()))) for i in range(n)]


def by_document(grades):
    return {g.document: g for g in grades}


def test_a_click_far_down_outweighs_more_clicks_at_the_top():
    # 20 searches show documents 1..5; document 1 (rank 1) is clicked 6 times, document 5
    # (rank 5) 4 times. Raw click-through says 1 is the better answer (0.30 against 0.20);
    # with rank 5 examined a fifth as often as rank 1, 5 is: 4 / (20 × 0.2 + 2 prior) = 0.67,
    # against 6 / (20 + 2) = 0.27.
    log = searches(20, [1, 2, 3, 4, 5], {**{i: {1} for i in range(6)}, **{i: {5} for i in range(6, 10)}})
    propensity = {1: 1.0, 2: 0.6, 3: 0.4, 4: 0.3, 5: 0.2}
    grades = by_document(implied_grades(log, propensity))
    assert grades[5].grade == 2 and grades[5].relevance == pytest.approx(4 / 6)
    assert grades[1].grade == 1 and grades[1].relevance == pytest.approx(6 / 22)
    # Skip-above: in the 4 searches that clicked rank 5, ranks 2-4 were read and passed over.
    assert grades[2].examinations == pytest.approx(4 * 1.0 + 16 * 0.6)
    assert grades[4].examinations == pytest.approx(4 * 1.0 + 16 * 0.3) and grades[4].grade == 0


def test_without_position_bias_the_top_click_would_win():
    log = searches(20, [1, 2, 3, 4, 5], {**{i: {1} for i in range(6)}, **{i: {5} for i in range(6, 10)}})
    flat = {rank: 1.0 for rank in range(1, 6)}
    grades = by_document(implied_grades(log, flat))
    assert grades[1].relevance > grades[5].relevance


def test_too_little_evidence_gives_no_judgment():
    log = searches(4, [1, 2, 3], {0: {1}, 1: {3}})
    grades = by_document(implied_grades(log, {1: 1.0, 2: 0.5, 3: 0.1}))
    # Document 2: examined 1 + 3 × 0.5 = 2.5 times, never clicked: under MIN_EXAMINATIONS (3), no
    # grade. Document 3: clicked once in 4 showings deep down: 1 / (0.4 + 2), grade 1, not 2:
    # one click far down is not a sure answer.
    assert set(grades) == {1, 3}
    assert grades[1].grade == 0 and grades[3].grade == 1  # 1 / (4 + 2) at rank 1: under 0.2
    assert by_document(implied_grades(searches(2, [1], {0: {1}}), {1: 1.0})) == {}  # 2 showings: too few


def test_propensity_from_click_through_by_rank_falls_and_has_a_floor():
    # Rank 1 clicked in 50 of 100 searches, rank 2 in 25, rank 3 never; rank 4 shown too rarely.
    log = [Impression("q%d" % i, (10, 20, 30), 1, frozenset({1} if i < 50 else {2} if i < 75 else ()))
           for i in range(100)] + [Impression("x", (1, 2, 3, 4), 1, frozenset({4}))]
    propensity = propensities(log)
    assert propensity[1] == 1.0
    assert propensity[2] == pytest.approx((25 / 101) / (50 / 101))
    assert propensity[3] == PROPENSITY_FLOOR
    assert propensity[4] == PROPENSITY_FLOOR  # 1 showing: the rank above's value, never more


@pytest.fixture
def collection(db):
    col = Collection.objects.create(name="Papers", slug="papers", visibility=Collection.Visibility.PUBLIC)
    for ext in ("d1", "d2", "d3"):
        doc = Document(collection=col, external_id=ext, title=f"Title {ext}", text=f"Text of {ext}")
        doc.refresh_hash()
        doc.save()
    return col


def log_searches(collection, n, clicked_rank=None, query="telomere length"):
    documents = list(collection.documents.order_by("external_id").values_list("pk", flat=True))
    for i in range(n):
        answer = {"total": 3, "rerank": {"applied": False},
                  "results": [{"rank": r, "document_id": d, "chunk": 0} for r, d in enumerate(documents, 1)]}
        params = SimpleNamespace(query=query, mode="hybrid", page=1, k=10, collections=[collection])
        log_search(RequestFactory().get("/api/search"), "api", params, answer, 5.0)
        if clicked_rank is not None:
            record_click(answer["search_id"], channel="api", rank=clicked_rank)
    return documents


def test_derivation_from_the_log_keeps_implicit_apart_and_staff_win(collection, admin_client):
    documents = log_searches(collection, 10, clicked_rank=3)  # the third result, every time
    derivation = derive_implicit_judgments()
    assert (derivation.searches, derivation.clicks) == (10, 10)
    implied = dict(ImplicitJudgment.objects.values_list("document__external_id", "grade"))
    assert implied == {"d1": 0, "d2": 0, "d3": 2}
    assert not Judgment.objects.exists()  # staff judgments are another table, untouched
    # Staff say d3 is only somewhat relevant, and judge d1 highly: staff win where both exist.
    Judgment.objects.create(collection=collection, query="telomere length", document_id=documents[2], grade=1,
                            query_id="7", source=Judgment.Source.IMPORT)
    assert collection_qrels(collection) == ({"7": "telomere length"}, {"7": {"d3": 1}})
    assert collection_qrels(collection, "implicit")[1] == {query_id_for("telomere length"): {"d1": 0, "d2": 0, "d3": 2}}
    assert collection_qrels(collection, "both") == ({"7": "telomere length"}, {"7": {"d1": 0, "d2": 0, "d3": 1}})
    with pytest.raises(ValueError, match="judgments must be one of staff, implicit, both"):
        collection_qrels(collection, "clicks")
    # A new derivation replaces the old one (the clicks now spread over ranks 1 and 3).
    log_searches(collection, 10, clicked_rank=1)
    derive_implicit_judgments()
    assert ImplicitJudgment.objects.count() == 3

    # The admin lists both grades side by side; "confirm" turns implicit grades into staff ones,
    # never over a staff grade.
    page = admin_client.get(reverse("admin:relevance_implicitjudgment_changelist")).content.decode()
    assert "staff grade" in page.lower() and ">judge</a>" in page
    response = admin_client.post(reverse("admin:relevance_implicitjudgment_changelist"), {
        "action": "confirm", "_selected_action": list(ImplicitJudgment.objects.values_list("pk", flat=True))},
        follow=True)
    assert "2 staff judgments created from clicks; 1 skipped" in response.content.decode()
    staff = dict(Judgment.objects.values_list("document__external_id", "grade"))
    assert staff["d3"] == 1 and set(staff) == {"d1", "d2", "d3"}
    assert "implied by clicks" in admin_client.get(reverse("admin:relevance_judgment_changelist")).content.decode().lower()


def test_evaluate_and_train_read_the_kind_asked_for(collection):
    from django.core.management import CommandError, call_command

    from relevance.collection_training import mine

    with pytest.raises(CommandError, match="has no implicit \\(click\\) judgments; run `manage.py click_judgments`"):
        call_command("evaluate", "papers", "--judgments", "implicit")
    with pytest.raises(CommandError, match="has no implicit judgments: they come from users' clicks"):
        mine(collection, "hybrid", 10, 0, 1, None, judgments="implicit")
    with pytest.raises(CommandError, match="invalid choice: 'clicks'"):
        call_command("train_reranker", "papers", "--judgments", "clicks")
