"""Metrics against a small example computed by hand (numbers in the comments)."""
import math

import pytest

from reranker.metrics import evaluate_run, mrr_at_k, ndcg_at_k, recall_at_k

# One query; the system ranks a, b, c, d. Judged: b grade 2, d grade 1, e grade 1 (never
# retrieved), a judged not relevant (0). c is unjudged (counts as 0).
RANKING = ["a", "b", "c", "d"]
JUDGED = {"a": 0, "b": 2, "d": 1, "e": 1}


def test_ndcg_by_hand():
    # DCG@3  = 0/log2(2) + 2/log2(3) + 0/log2(4)            = 1.261860
    # IDCG@3 = 2/log2(2) + 1/log2(3) + 1/log2(4) = 2 + 0.630930 + 0.5 = 3.130930
    assert ndcg_at_k(RANKING, JUDGED, 3) == pytest.approx(1.261860 / 3.130930, abs=1e-6)
    assert ndcg_at_k(RANKING, JUDGED, 3) == pytest.approx(0.403030, abs=1e-6)
    # DCG@4 adds 1/log2(5) = 0.430677 → 1.692536; IDCG@4 = IDCG@3 (only three relevant) → 0.540586
    assert ndcg_at_k(RANKING, JUDGED, 4) == pytest.approx(0.540586, abs=1e-6)
    # A perfect ranking scores 1, a ranking with nothing relevant 0.
    assert ndcg_at_k(["b", "d", "e"], JUDGED, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["a", "c"], JUDGED, 10) == 0.0


def test_recall_and_mrr_by_hand():
    assert recall_at_k(RANKING, JUDGED, 1) == 0.0
    assert recall_at_k(RANKING, JUDGED, 3) == pytest.approx(1 / 3)
    assert recall_at_k(RANKING, JUDGED, 100) == pytest.approx(2 / 3)   # e is never retrieved
    assert mrr_at_k(RANKING, JUDGED, 1) == 0.0
    assert mrr_at_k(RANKING, JUDGED, 10) == pytest.approx(1 / 2)       # first relevant: b at rank 2
    assert mrr_at_k(["c", "a", "x"], JUDGED, 10) == 0.0


def test_duplicate_documents_count_once():
    # Two chunks of b: the second must not add gain nor push d out of the top 3, so the
    # ranking is a, b, d: DCG@3 = 2/log2(3) + 1/log2(4) = 1.761860 → 1.761860 / 3.130930 = 0.562727
    assert ndcg_at_k(["a", "b", "b", "d"], JUDGED, 3) == pytest.approx(0.562727, abs=1e-6)
    assert recall_at_k(["b", "b", "d"], JUDGED, 2) == pytest.approx(2 / 3)


def test_evaluate_run_averages_and_skips_unanswerable_queries():
    qrels = {"q1": JUDGED, "q2": {"x": 1}, "q3": {"y": 0}}   # q3 has no relevant document
    run = {"q1": RANKING}                                    # q2 returned nothing
    result = evaluate_run(run, qrels, {"ndcg": 3, "recall": 100, "mrr": 10})
    assert result["queries"] == 2
    assert set(result["per_query"]) == {"q1", "q2"}
    assert result["per_query"]["q2"] == {"ndcg@3": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    assert result["mean"]["ndcg@3"] == pytest.approx(0.403030 / 2, abs=1e-6)
    assert result["mean"]["recall@100"] == pytest.approx((2 / 3) / 2)
    assert result["mean"]["mrr@10"] == pytest.approx(0.25)


def test_undefined_query_is_an_error():
    with pytest.raises(ValueError, match="without relevant"):
        ndcg_at_k(["a"], {"a": 0}, 10)
    assert math.isclose(ndcg_at_k(["a"], {"a": 3}, 10), 1.0)
