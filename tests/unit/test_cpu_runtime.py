"""The CPU runtime of the reranker: a trained model's OpenVINO export scores like torch, int8 is
calibrated on given pairs and used only where it kept the model's held-out quality, a damaged
export is rebuilt, and a model OpenVINO cannot serve falls back to torch, saying why."""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from scipy.stats import spearmanr

from reranker import cross_encoder
from reranker.openvino_export import (CALIBRATION, FP32, INT8, MANIFEST, TRACED, ExportError, calibration_pairs,
                                      export, export_folder, quantize, read_export, record_int8_judgment)
from reranker.scorers import OpenVinoScorer, pick_runtime
from reranker.training import JudgedQuery, TrainingData, TrainingSettings, torch_scorer, train
from tests.unit.test_training import DOCUMENTS, QUERIES

# Pairs of very different lengths, so that batches pad differently (the export must not have
# frozen any shape).
PASSAGES = [*DOCUMENTS.values(), "short", " ".join(["Long passage about fruit, cars and the sea."] * 40)]
PAIRS = [(q.query, p) for q in QUERIES for p in PASSAGES]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small model really trained (2 layers of the packaged MiniLM, a few steps), saved."""
    import torch

    torch.set_num_threads(2)
    settings = TrainingSettings(max_length=96, negatives=3, negatives_from_top=5, groups_per_batch=4, epochs=4,
                                max_steps=12, heldout_fraction=0.34, rerank_top=5, seed=3, device="cpu",
                                lr_body=1e-4, lr_head=5e-3, layers=2)
    data = TrainingData(queries=list(QUERIES), documents=DOCUMENTS, mode="")
    result = train(data, settings, echo=lambda line: None)
    directory = tmp_path_factory.mktemp("openvino") / "trained"
    result.model.save(str(directory))
    return result.model, directory


@pytest.fixture
def fresh_loads():
    cross_encoder.load_reranker.cache_clear()
    yield
    cross_encoder.load_reranker.cache_clear()


def test_float32_export_orders_like_torch_and_int8_is_calibrated(trained):
    model, directory = trained
    assert model[0].auto_model.config.num_hidden_layers == 2
    state = export(directory)
    assert (state.folder / TRACED).is_file() and (state.folder / FP32).is_file()
    assert not state.has_int8 and "calibrated on a collection" in state.int8_reason
    reference = torch_scorer(model, "float32").score_pairs(PAIRS)
    fp32 = OpenVinoScorer(directory, False, model.max_seq_length, batch_size=5).score_pairs(PAIRS)
    assert spearmanr(reference, fp32)[0] >= 0.999
    np.testing.assert_allclose(fp32, reference, atol=1e-3)
    # Scores do not depend on the batch a pair lands in.
    alone = OpenVinoScorer(directory, False, model.max_seq_length, batch_size=1).score_pairs(PAIRS[:7])
    np.testing.assert_allclose(alone, fp32[:7], atol=1e-4)
    with pytest.raises(ExportError, match="no int8 model"):
        OpenVinoScorer(directory, True, model.max_seq_length)

    state = quantize(directory, PAIRS[::2])
    assert state.has_int8 and (state.folder / INT8).is_file()
    assert len((state.folder / CALIBRATION).read_text().splitlines()) == len(PAIRS[::2])
    int8 = OpenVinoScorer(directory, True, model.max_seq_length).score_pairs(PAIRS)
    assert spearmanr(reference, int8)[0] > 0.9  # close, not equal: that is what the int8 rule judges
    assert not np.allclose(int8, fp32, atol=1e-6)
    with pytest.raises(ExportError, match="calibration pairs"):
        quantize(directory, [])


def test_calibration_pairs_come_from_the_queries_candidates():
    queries = [JudgedQuery(q.query, q.judged, q.candidates) for q in QUERIES]
    pairs = calibration_pairs(queries, DOCUMENTS, count=7, per_query=2)
    assert len(pairs) == 7
    assert pairs[0] == (queries[0].query, DOCUMENTS[queries[0].candidates[0]])
    assert {q for q, _ in pairs} <= {q.query for q in queries}


def test_int8_only_when_its_heldout_quality_held(trained, settings, fresh_loads):
    _, directory = trained
    quantize(directory, PAIRS[::2])
    settings.RERANKER_RUNTIME = "auto"
    settings.RERANKER_DEVICE = "cpu"
    assert read_export(directory).int8_allowed is False  # never judged: float32
    assert cross_encoder.load_reranker(str(directory)).precision == "float32"

    judgment = record_int8_judgment(directory, float32_ndcg=0.700, int8_ndcg=0.690, queries=50)
    assert judgment["allowed"] is False and "more than 0.005 below" in judgment["reason"]
    cross_encoder.load_reranker.cache_clear()
    reranker = cross_encoder.load_reranker(str(directory))
    assert (reranker.runtime, reranker.precision) == ("openvino", "float32")

    judgment = record_int8_judgment(directory, float32_ndcg=0.700, int8_ndcg=0.6962, queries=50)
    assert judgment["allowed"] is True
    cross_encoder.load_reranker.cache_clear()
    reranker = cross_encoder.load_reranker(str(directory))
    assert (reranker.runtime, reranker.precision) == ("openvino", "int8")
    assert json.loads((export_folder(directory) / MANIFEST).read_text())["int8"]["queries"] == 50

    # RERANKER_RUNTIME forces a runtime whatever the judgment says.
    for forced, expected in (("torch", ("torch", "float32")), ("openvino", ("openvino", "float32")),
                             ("openvino-int8", ("openvino", "int8"))):
        settings.RERANKER_RUNTIME = forced
        settings.RERANKER_PRECISION = "float32"
        cross_encoder.load_reranker.cache_clear()
        reranker = cross_encoder.load_reranker(str(directory))
        assert (reranker.runtime, reranker.precision) == expected
    assert pick_runtime("cuda", "auto", True) == ("torch", False)

    # A new calibration makes a new int8 model: the old judgment no longer applies.
    quantize(directory, PAIRS[1::2])
    assert read_export(directory).int8_allowed is False


def test_int8_forced_on_a_model_without_one_runs_float32_and_says_why(trained, settings, fresh_loads, tmp_path):
    _, directory = trained
    plain = tmp_path / "plain"
    shutil.copytree(directory, plain, ignore=shutil.ignore_patterns("openvino"))
    settings.RERANKER_RUNTIME, settings.RERANKER_DEVICE = "openvino-int8", "cpu"
    reranker = cross_encoder.load_reranker(str(plain))
    assert (reranker.runtime, reranker.precision) == ("openvino", "float32")
    assert "int8 asked for" in reranker.describe()["fallback_reason"]


def test_a_damaged_or_missing_export_is_rebuilt(trained, settings, fresh_loads):
    model, directory = trained
    quantize(directory, PAIRS[::2])
    record_int8_judgment(directory, float32_ndcg=0.700, int8_ndcg=0.699, queries=20)
    folder = export_folder(directory)
    expected = OpenVinoScorer(directory, False, model.max_seq_length).score_pairs(PAIRS[:5])
    expected8 = OpenVinoScorer(directory, True, model.max_seq_length).score_pairs(PAIRS[:5])
    with open(folder / "model.bin", "r+b") as handle:  # a few bytes overwritten in the middle
        handle.seek(1000)
        handle.write(b"\x00" * 64)
    with pytest.raises(ExportError, match="damaged"):
        read_export(directory)
    settings.RERANKER_RUNTIME, settings.RERANKER_DEVICE = "auto", "cpu"
    reranker = cross_encoder.load_reranker(str(directory))  # rebuilds, then serves
    assert reranker.runtime == "openvino" and not reranker.fallback_reason
    # The int8 model was made again from the same calibration pairs: its judgment still holds.
    state = read_export(directory)
    assert state.int8_allowed and reranker.precision == "int8"
    np.testing.assert_allclose(OpenVinoScorer(directory, False, model.max_seq_length).score_pairs(PAIRS[:5]),
                               expected, atol=1e-4)
    np.testing.assert_allclose(reranker.score(PAIRS[0][0], [p for _, p in PAIRS[:5]]), expected8, atol=1e-3)
    shutil.rmtree(folder)
    cross_encoder.load_reranker.cache_clear()
    reranker = cross_encoder.load_reranker(str(directory))
    assert (reranker.runtime, reranker.precision) == ("openvino", "float32")
    assert (folder / FP32).is_file() and not read_export(directory).has_int8


def test_a_model_the_runtime_cannot_serve_falls_back_to_torch(trained, settings, fresh_loads, tmp_path, caplog):
    """The export cannot be written (its place is taken by a file): the worker logs why and
    scores with torch, and says so."""
    model, directory = trained
    blocked = tmp_path / "blocked"
    shutil.copytree(directory, blocked, ignore=shutil.ignore_patterns("openvino"))
    export_folder(blocked).write_text("not a folder")
    settings.RERANKER_RUNTIME, settings.RERANKER_DEVICE, settings.RERANKER_PRECISION = "auto", "cpu", "float32"
    reranker = cross_encoder.load_reranker(str(blocked))
    assert reranker.runtime == "torch"
    assert "in the way" in reranker.fallback_reason
    assert reranker.describe()["fallback_reason"] == reranker.fallback_reason
    assert any("OpenVINO cannot serve it" in record.getMessage() for record in caplog.records)
    passages = [p for _, p in PAIRS[:6]]
    np.testing.assert_allclose(reranker.score(PAIRS[0][0], passages),
                               torch_scorer(model, "float32").score_pairs([(PAIRS[0][0], p) for p in passages]),
                               atol=1e-4)


def test_a_hugging_face_cross_encoder_directory_exports_too(tmp_path):
    """Not only models trained here: a sequence-classification cross-encoder (the layout of
    Hugging Face rerankers) exports and scores like torch."""
    import torch
    from sentence_transformers import CrossEncoder

    from indexer.embedding import resolve_model_path

    torch.manual_seed(5)
    path = tmp_path / "hf-style"
    CrossEncoder(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"), num_labels=1).save(str(path))
    model = CrossEncoder(str(path), device="cpu")
    model.eval()
    export(path)
    reference = model.predict(PAIRS[:20], activation_fn=torch.nn.Identity())
    scores = OpenVinoScorer(path, False, model.max_seq_length).score_pairs(PAIRS[:20])
    assert spearmanr(reference, scores)[0] >= 0.999


def test_judged_queries_without_candidates_by_mode_still_get_a_heldout_report():
    """Held-out scoring goes through any scorer with score_pairs (here torch), and the fusion's
    figure is cross-validated over folds of the held-out queries."""
    from reranker.training import build_model, heldout_metrics

    model = build_model("sentence-transformers/all-MiniLM-L6-v2", 64, "cpu", layers=1)
    model.eval()
    queries = [JudgedQuery(q.query, q.judged, q.candidates) for q in QUERIES]
    report = heldout_metrics(torch_scorer(model, "float32"), queries, DOCUMENTS, top=5, seed=1)
    assert report["queries"] == 6 and report["runtime"] == "torch float32"
    assert len(report["fusion_folds"]) == 5
    assert set(report["final"]) == set(report["final_in_sample"]) == set(report["first_stage"])


def test_int8_serves_only_where_it_is_faster_than_float32(trained, settings, fresh_loads, monkeypatch, caplog):
    """On a CPU without fast int8 dot products int8 can be slower than float32: the worker times
    both when it loads a model judged safe in int8, and keeps the faster (here, speeds as a
    CPU would report them)."""
    _, directory = trained
    quantize(directory, PAIRS[::2])
    record_int8_judgment(directory, float32_ndcg=0.700, int8_ndcg=0.700, queries=20)
    settings.RERANKER_RUNTIME, settings.RERANKER_DEVICE = "auto", "cpu"
    for int8_speed, expected in ((300.0, "int8"), (90.0, "float32")):
        monkeypatch.setattr(cross_encoder, "pairs_per_second",
                            lambda scorer, speed=int8_speed: speed if scorer.precision == "int8" else 120.0)
        cross_encoder.load_reranker.cache_clear()
        with caplog.at_level(logging.WARNING, logger="reranker.cross_encoder"):
            assert cross_encoder.load_reranker(str(directory)).precision == expected
    assert any("is not faster than float32" in record.getMessage() for record in caplog.records)
    # Forced int8 is int8, whatever the speeds.
    settings.RERANKER_RUNTIME = "openvino-int8"
    cross_encoder.load_reranker.cache_clear()
    assert cross_encoder.load_reranker(str(directory)).precision == "int8"
