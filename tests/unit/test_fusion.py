"""reranker/fusion.py: the final order of a reranked head, the saved choice, and the grid search."""
from __future__ import annotations

import json

import pytest

from reranker.fusion import FILE, Fusion, ModelFusion, choose_fusion, load_fusion, save_fusion


def test_weight_zero_is_the_logit_order_with_ties_in_first_stage_order():
    assert Fusion().order([0.1, 0.9, 0.5, 0.9]) == [1, 3, 2, 0]


def test_weighted_reciprocal_rank_fusion_by_hand():
    # Reranker ranks: a=3, b=1, c=2; first-stage ranks: a=1, b=2, c=3; k=10, weight 1:
    # a 1/13 + 1/11 = 0.16783, b 1/11 + 1/12 = 0.17424, c 1/12 + 1/13 = 0.16026 → b, a, c.
    assert Fusion(weight=1.0, k=10).order([0.0, 2.0, 1.0]) == [1, 0, 2]
    # A large weight gives the first stage's order back; a tiny one the reranker's.
    assert Fusion(weight=100.0, k=10).order([0.0, 2.0, 1.0]) == [0, 1, 2]
    assert Fusion(weight=0.01, k=10).order([0.0, 2.0, 1.0]) == [1, 2, 0]


def test_score_fusion_by_hand_keeps_the_rerankers_margins():
    # Logits 0, 3, 1 standardise to -1.0690, 1.3363, -0.2673; minus 1 * ln(rank 1, 2, 3):
    # a -1.0690, b 0.6432, c -1.3659 → b, a, c.
    assert Fusion(weight=1.0, kind="score").order([0.0, 3.0, 1.0]) == [1, 0, 2]
    # The same reranker ranks (b, a, c), once with a clear margin and once with a near tie at
    # the top: reciprocal-rank fusion sees only the ranks and orders both alike; the score
    # fusion lets the clear margin overturn the first stage and the near tie keep its order.
    clear, near_tie = [1.0, 4.0, 0.0], [1.0, 1.01, 0.0]
    assert Fusion(weight=0.5, k=10).order(clear) == Fusion(weight=0.5, k=10).order(near_tie) == [1, 0, 2]
    assert Fusion(weight=1.0, kind="score").order(clear) == [1, 0, 2]
    assert Fusion(weight=1.0, kind="score").order(near_tie) == [0, 1, 2]
    assert Fusion(weight=1.0, kind="score").order([]) == []
    # Equal logits carry no opinion: the first stage's order.
    assert Fusion(weight=0.5, kind="score").order([2.0, 2.0, 2.0]) == [0, 1, 2]


def test_save_and_load_one_fusion_per_mode(tmp_path):
    assert load_fusion(tmp_path) == ModelFusion()  # no file: the reranker alone, in every mode
    assert load_fusion(None).for_mode("hybrid") == Fusion()
    saved = ModelFusion(default=Fusion(weight=1.0, k=10), modes=(("keyword", Fusion(weight=0.25, k=60)),))
    save_fusion(saved, tmp_path)
    loaded = load_fusion(tmp_path)
    assert loaded == saved
    assert loaded.for_mode("keyword") == Fusion(weight=0.25, k=60)
    assert loaded.for_mode("semantic") == loaded.for_mode("hybrid") == Fusion(weight=1.0, k=10)  # the default
    # A file with a single fusion (no "modes") applies to every mode.
    (tmp_path / FILE).write_text(json.dumps({"weight": 0.5, "k": 60}))
    assert load_fusion(tmp_path).for_mode("keyword") == Fusion(weight=0.5, k=60)
    (tmp_path / FILE).write_text(json.dumps({"weight": 1, "k": 10, "modes": {"keyword": {"weight": 1, "k": 0}}}))
    with pytest.raises(ValueError, match="k >= 1"):
        load_fusion(tmp_path)
    scored = ModelFusion(default=Fusion(weight=0.75, kind="score"), modes=(("keyword", Fusion(weight=1.0, k=60)),))
    save_fusion(scored, tmp_path)
    assert load_fusion(tmp_path) == scored and load_fusion(tmp_path).for_mode("hybrid").kind == "score"
    (tmp_path / FILE).write_text(json.dumps({"weight": 1, "k": 10, "kind": "borda"}))
    with pytest.raises(ValueError, match="kind must be one of rrf, score"):
        load_fusion(tmp_path)
    (tmp_path / FILE).write_text(json.dumps({"weight": -1, "k": 10}))
    with pytest.raises(ValueError, match="weight must be >= 0"):
        load_fusion(tmp_path)
    (tmp_path / FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not a fusion file"):
        load_fusion(tmp_path)


def test_choose_fusion_keeps_first_stage_evidence_only_when_it_helps():
    qrels = {"q1": {"d1": 1}, "q2": {"d5": 1}}
    queries = ["q1", "q2"]
    # The reranker puts the relevant document 3rd; the first stage has it 1st: fusion helps.
    noisy = [(["d1", "d2", "d3", "d4"], [0.5, 0.9, 0.7, 0.1], []),
             (["d5", "d6", "d7", "d8"], [0.2, 0.9, 0.8, 0.1], [])]
    fusion, grid = choose_fusion(noisy, qrels, queries)
    assert fusion.weight > 0
    assert grid[fusion.label] > grid["w=0,k=10"]
    assert {"w=1,k=60", "score w=1"} <= set(grid)  # both kinds were tried
    # The reranker is right and the first stage wrong: the reranker alone (weight 0) wins.
    right = [(["d2", "d3", "d4", "d1"], [0.1, 0.2, 0.3, 0.9], []),
             (["d6", "d7", "d8", "d5"], [0.1, 0.2, 0.3, 0.9], [])]
    fusion, grid = choose_fusion(right, qrels, queries)
    assert fusion == Fusion() and grid["w=0,k=10"] == 1.0


def test_choose_fusion_takes_the_score_kind_when_the_rerankers_margins_carry_the_answer():
    # q1: the reranker is sure the first stage's 3rd is relevant (a wide margin): it must rise.
    # q2: the reranker barely prefers a wrong 2nd over the relevant 1st (a near tie): the first
    # stage must keep it. Reciprocal-rank fusion sees the same ranks in both and gets one wrong.
    qrels = {"q1": {"a3": 1}, "q2": {"b1": 1}}
    heads = [(["a1", "a2", "a3", "a4"], [0.0, 0.0, 6.0, -1.0], []),
             (["b1", "b2", "b3", "b4"], [1.0, 1.05, -1.0, -2.0], [])]
    fusion, grid = choose_fusion(heads, qrels, ["q1", "q2"])
    assert fusion.kind == "score", grid
    assert grid[fusion.label] == 1.0 > max(value for label, value in grid.items() if not label.startswith("score"))
