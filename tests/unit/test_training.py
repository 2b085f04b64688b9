"""Reranker training: negatives never contain judged positives, the held-out split is stable,
and a tiny real training run (a few steps of the real base model) saves a CrossEncoder that
loads, scores like the trained one, differs from the base, and is reproducible from the seed."""
import json
import random

import numpy as np
import pytest
import torch

from reranker.training import (JudgedQuery, TrainingData, TrainingSettings, build_groups, build_model,
                               negatives_for, save, score_pairs, split_queries, train)

# A toy collection in two topics; queries about one topic judge its documents relevant.
DOCUMENTS = {
    "fruit-1": "Apples and pears are fruits that grow on trees in orchards.",
    "fruit-2": "Bananas are rich in potassium and are eaten ripe and yellow.",
    "fruit-3": "Oranges and lemons are citrus fruits full of vitamin C.",
    "car-1": "The car engine burns petrol and drives the wheels through a gearbox.",
    "car-2": "Electric cars store energy in a large lithium battery pack.",
    "car-3": "Brakes slow a vehicle by pressing pads against the discs.",
    "sea-1": "Whales are large mammals that live in the ocean and breathe air.",
    "sea-2": "Coral reefs grow in warm shallow seas and shelter many fish.",
}
QUERIES = [
    JudgedQuery("which fruit grows on trees", {"fruit-1": 1, "car-1": 0}, ["car-1", "fruit-1", "fruit-2", "sea-1", "car-2"]),
    JudgedQuery("fruit with vitamin c", {"fruit-3": 2, "fruit-2": 1}, ["car-2", "fruit-2", "sea-2", "fruit-3", "car-3"]),
    JudgedQuery("how does a car engine work", {"car-1": 1}, ["fruit-1", "car-1", "car-2", "sea-1", "car-3"]),
    JudgedQuery("electric vehicle battery", {"car-2": 1, "car-3": 0}, ["sea-2", "car-3", "car-2", "fruit-3", "car-1"]),
    JudgedQuery("animals living in the sea", {"sea-1": 1, "sea-2": 1}, ["fruit-2", "sea-2", "car-1", "sea-1", "fruit-1"]),
    JudgedQuery("what are coral reefs", {"sea-2": 1}, ["car-3", "sea-2", "sea-1", "fruit-3", "car-2"]),
]


def test_negatives_never_contain_judged_positives():
    rng = random.Random(0)
    settings = TrainingSettings(negatives=4, negatives_from_top=5)
    keys = sorted(DOCUMENTS)
    for _ in range(50):
        for query, docs in build_groups(QUERIES, settings, keys, rng):
            judged = next(q.judged for q in QUERIES if q.query == query)
            positive, negatives = docs[0], docs[1:]
            assert judged[positive] > 0
            assert len(negatives) == 4 and len(set(negatives)) == 4
            assert not {d for d in negatives if judged.get(d, 0) > 0}, (query, negatives)
    # Candidates run short (two relevant among three): topped up from the collection, still clean.
    short = JudgedQuery("q", {"a": 1, "b": 1}, ["a", "b", "c"])
    for _ in range(20):
        negatives = negatives_for(short, 3, 30, ["a", "b", "c", "d", "e", "f"], rng)
        assert len(negatives) == 3 and not {"a", "b"} & set(negatives) and "c" in negatives


def test_heldout_split_is_seeded_and_stable():
    train_a, held_a = split_queries(QUERIES, 0.34, seed=1)
    train_b, held_b = split_queries(list(reversed(QUERIES)), 0.34, seed=1)
    assert [q.query for q in held_a] == [q.query for q in held_b] and len(held_a) == 2
    assert not {q.query for q in train_a} & {q.query for q in held_a}
    # A query without a relevant document is neither trained on nor evaluated.
    extra = JudgedQuery("nothing relevant", {"car-1": 0}, ["car-1"])
    train_c, held_c = split_queries([*QUERIES, extra], 0.34, seed=1)
    assert extra.query not in {q.query for q in train_c + held_c}


TINY = dict(max_length=64, negatives=3, negatives_from_top=5, groups_per_batch=4, epochs=6, max_steps=8,
            heldout_fraction=0.34, rerank_top=5, seed=7, device="cpu", lr_body=1e-4, lr_head=5e-3, warmup=0.25)


def test_tiny_training_run_saves_a_loadable_model_that_learned(tmp_path):
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(1)
    settings = TrainingSettings(**TINY)
    # Candidates of two first-stage modes: the held-out evaluation chooses a fusion for each.
    queries = [JudgedQuery(q.query, q.judged, q.candidates,
                           candidates_by_mode={"hybrid": q.candidates, "keyword": q.candidates[::-1]}) for q in QUERIES]
    data = TrainingData(queries=queries, documents=DOCUMENTS, first_stage="hand-made", mode="hybrid")
    result = train(data, settings, echo=lambda line: None, log_every=2)
    assert result.steps == 8
    assert [row["step"] for row in result.loss_log] == [2, 4, 6, 8]
    assert result.constant_loss == pytest.approx(np.log(4))
    assert result.heldout["queries"] == 2 and "ndcg@10" in result.heldout["reranked"]

    out = save(result, tmp_path / "toy-v1", "toy-v1", "no (test)")
    card = (out / "README.md").read_text()
    assert "constant predictor" in card and "Held-out queries (2" in card
    assert json.loads((out / "training.json").read_text())["steps"] == 8
    # The fusion with the first stage chosen on the held-out queries is saved beside the weights
    # (the rerank worker sends it with the logits), and "final" is the search with it.
    from reranker.fusion import ModelFusion, load_fusion

    saved = load_fusion(out)
    assert saved == ModelFusion.from_dict(result.heldout["fusion"])
    assert set(result.heldout["modes"]) == {"hybrid", "keyword"} == set(dict(saved.modes))
    # The install decision and "final" are the mined mode's (hybrid here).
    assert result.heldout["mode"] == "hybrid" and result.heldout["final"] == result.heldout["modes"]["hybrid"]["final"]
    for mode, report in result.heldout["modes"].items():
        assert saved.for_mode(mode).to_dict() == report["fusion"]
        assert report["first_stage"]["ndcg@10"] >= 0 and "ndcg@10" in report["final"]
    chosen = saved.default.label
    # The grid's best is the chosen fusion graded on the queries it was chosen on; "final" grades
    # each fold with the fusion chosen on the others.
    assert result.heldout["final_in_sample"]["ndcg@10"] == pytest.approx(result.heldout["fusion_grid"][chosen], abs=1e-4)
    assert result.heldout["fusion_grid"][chosen] == max(result.heldout["fusion_grid"].values())
    assert result.beats_first_stage == (result.heldout["final"]["ndcg@10"] > result.heldout["first_stage"]["ndcg@10"])

    pairs = [(q.query, DOCUMENTS[d]) for q in QUERIES for d in DOCUMENTS]
    loaded = CrossEncoder(str(out), device="cpu")
    trained_scores = score_pairs(loaded, pairs)
    np.testing.assert_allclose(trained_scores, score_pairs(result.model, pairs), rtol=1e-4, atol=1e-5)
    base_scores = score_pairs(build_model(settings.base, settings.max_length, "cpu"), pairs)
    assert np.allclose(base_scores, 0.0)            # zero-initialised head: the constant predictor
    assert np.std(trained_scores) > 1e-3            # the trained model tells pairs apart

    # It learned something: on its training queries, relevant documents now outscore the rest.
    train_queries, _ = split_queries(QUERIES, settings.heldout_fraction, settings.seed)
    relevant, other = [], []
    for query in train_queries:
        scores = score_pairs(loaded, [(query.query, DOCUMENTS[d]) for d in DOCUMENTS])
        for doc, score in zip(DOCUMENTS, scores):
            (relevant if query.judged.get(doc, 0) > 0 else other).append(score)
    assert np.mean(relevant) > np.mean(other)

    # Same inputs and seed: the same model.
    again = train(data, TrainingSettings(**TINY), echo=lambda line: None, log_every=2)
    np.testing.assert_allclose(score_pairs(again.model, pairs), score_pairs(result.model, pairs), atol=1e-6)
    assert again.loss_log == result.loss_log


def test_a_new_head_reads_the_base_the_way_the_base_was_trained(tmp_path):
    # all-MiniLM-L6-v2 was trained mean-pooled, bge-small-en-v1.5 on its CLS token (each says so in
    # its 1_Pooling/config.json); a plain transformer directory gets mean pooling.
    from indexer.embedding import resolve_model_path
    from reranker.training import TrainingError, base_pooling

    def pooling_of(model):
        return model[1].pooling_mode

    assert base_pooling(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")) == "mean"
    assert base_pooling(str(tmp_path)) == "mean"
    bge = resolve_model_path("bge-small-en-v1.5")
    assert base_pooling(bge) == "cls"
    assert pooling_of(build_model(bge, 64, "cpu", layers=1)) == "cls"
    assert pooling_of(build_model(bge, 64, "cpu", layers=1, pooling="mean")) == "mean"
    with pytest.raises(TrainingError, match="pooling 'max'"):
        build_model(bge, 64, "cpu", layers=1, pooling="max")
