"""The bi-encoder's runtimes (indexer/encoders.py): OpenVINO float32 gives torch's vectors, both
apply the model's query and document prompts, the export is made once and reused, and a bad
runtime setting is refused."""
import json
import shutil

import numpy as np
import pytest

from indexer.embedding import resolve_model_path
from indexer.encoders import EncoderError, OpenVinoEncoder, TorchEncoder, export_dir, pick_runtime, read_layout

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = ["Aspirin lowers the risk of heart attacks in adults.", "短い文", "x",
         "A much longer passage about protein folding, " * 20]


@pytest.fixture(scope="module")
def prompted(tmp_path_factory):
    """The packaged MiniLM with a query prompt, as a converted catalogue model carries one."""
    directory = tmp_path_factory.mktemp("models") / "minilm-prompted"
    shutil.copytree(resolve_model_path(MINILM), directory)
    config = directory / "config_sentence_transformers.json"
    data = json.loads(config.read_text()) if config.exists() else {}
    data["prompts"] = {"query": "query: ", "document": ""}
    data["default_prompt_name"] = None
    config.write_text(json.dumps(data))
    return directory


def test_openvino_gives_torchs_vectors_with_the_prompts(prompted, tmp_path):
    torch_encoder = TorchEncoder("m", str(prompted), "cpu")
    openvino = OpenVinoEncoder("m", str(prompted), tmp_path)
    assert (openvino.dimension, openvino.max_seq_length) == (torch_encoder.dimension, torch_encoder.max_seq_length)
    for method in ("encode_documents", "encode_queries"):
        a, b = getattr(torch_encoder, method)(TEXTS, batch_size=2), getattr(openvino, method)(TEXTS, batch_size=2)
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape == (len(TEXTS), 384)
        assert np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-5)
        assert float((a * b).sum(axis=1).min()) >= 0.9999
    # The query prompt is applied: the same text is a different vector as a query...
    query, document = openvino.encode_queries(TEXTS[:1])[0], openvino.encode_documents(TEXTS[:1])[0]
    assert float(query @ document) < 0.9999
    # ... and exactly the document vector of the prompted text.
    assert float(query @ openvino.encode_documents(["query: " + TEXTS[0]])[0]) >= 0.9999
    assert openvino.encode_queries([]).shape == (0, 384)


def test_the_export_is_made_once_and_follows_the_weights(prompted, tmp_path):
    OpenVinoEncoder("m", str(prompted), tmp_path)
    first = export_dir(prompted, tmp_path)
    made = (first / "encoder.xml").stat().st_mtime_ns
    OpenVinoEncoder("m", str(prompted), tmp_path)
    assert (first / "encoder.xml").stat().st_mtime_ns == made
    (prompted / "config.json").write_text((prompted / "config.json").read_text() + "\n")
    assert export_dir(prompted, tmp_path) != first


def test_layout_and_runtime_choice(prompted, tmp_path):
    layout = read_layout(prompted)
    assert (layout.pooling, layout.normalize, layout.prompts) == ("mean", True, {"query": "query: "})
    # (runtime, int8): None = as the model's int8 record allows, True = required, False = never.
    assert pick_runtime("auto", "cpu") == ("openvino", None) and pick_runtime("auto", "cuda") == ("torch", False)
    assert pick_runtime("torch", "cpu") == ("torch", False)
    assert pick_runtime("openvino", "cpu") == ("openvino", False)
    assert pick_runtime("openvino-int8", "cpu") == ("openvino", True)
    with pytest.raises(ValueError, match="EMBEDDING_RUNTIME must be one of auto, torch, openvino"):
        pick_runtime("onnx", "cpu")
    with pytest.raises(EncoderError, match="runs on the CPU"):
        pick_runtime("openvino", "cuda:0")
    with pytest.raises(EncoderError, match="not a local directory"):
        OpenVinoEncoder("org/hub-model", "org/hub-model", tmp_path)


@pytest.mark.parametrize("variable, value, words", [
    ("EMBEDDING_RUNTIME", "onnx", "EMBEDDING_RUNTIME must be one of auto, torch, openvino"),
    ("EMBEDDING_THREADS", "-2", "EMBEDDING_THREADS must be 0 or more"),
    ("RERANKER_RUNTIME", "onnx", "the CPU runtime is OpenVINO now"),
    ("RERANKER_PRECISION", "int4", "RERANKER_PRECISION must be one of"),
])
def test_bad_runtime_settings_stop_the_start(variable, value, words):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, variable: value, "DJANGO_SETTINGS_MODULE": "searchsite.settings"}
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=Path(__file__).parents[2],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and words in result.stderr, result.stderr[-2000:]


def test_int8_serves_only_where_its_judgment_allows(prompted, tmp_path):
    """NNCF's int8 model of the export: made on documents, used by default only once judged
    within the tolerance of float32 on held-out queries, forced by EMBEDDING_RUNTIME=openvino-int8."""
    from indexer.encoders import INT8_TOLERANCE, quantize_openvino, record_int8_judgment

    with pytest.raises(EncoderError, match="no int8 model"):
        OpenVinoEncoder("m", str(prompted), tmp_path, int8=True)
    calibration = [f"{text} Measured in sample {i}." for i in range(8) for text in TEXTS]
    quantize_openvino(prompted, tmp_path, calibration)
    unjudged = OpenVinoEncoder("m", str(prompted), tmp_path)
    assert unjudged.precision == "float32" and "not judged" in unjudged.int8_reason
    forced = OpenVinoEncoder("m", str(prompted), tmp_path, int8=True)
    assert forced.precision == "int8"
    a, b = unjudged.encode_documents(TEXTS), forced.encode_documents(TEXTS)
    assert np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-5)
    cosines = (a * b).sum(axis=1)
    # Close, yet really int8 (32 calibration texts here; the judgment is what guards quality).
    assert float(cosines.mean()) >= 0.9 and float(cosines.max()) < 0.99999
    judged = record_int8_judgment(prompted, tmp_path, 0.70, 0.70 - INT8_TOLERANCE / 2, 40, "test queries")
    assert judged["allowed"] and OpenVinoEncoder("m", str(prompted), tmp_path).precision == "int8"
    assert OpenVinoEncoder("m", str(prompted), tmp_path, int8=False).precision == "float32"
    refused = record_int8_judgment(prompted, tmp_path, 0.70, 0.70 - 2 * INT8_TOLERANCE, 40, "test queries")
    assert not refused["allowed"] and "more than 0.005 below" in refused["reason"]
    fallback = OpenVinoEncoder("m", str(prompted), tmp_path)
    assert fallback.precision == "float32" and "more than 0.005 below" in fallback.int8_reason


def test_batches_keep_the_padded_tokens_within_the_budget():
    from indexer.encoders import token_budget_batches

    lengths = [512, 500, 300, 120, 40, 40, 12, 9, 3]
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches = token_budget_batches(order, lengths, batch_size=4, budget=1024)
    assert [i for batch in batches for i in batch] == order  # every text once, in order
    for batch in batches:
        assert len(batch) <= 4 and (len(batch) == 1 or len(batch) * lengths[batch[0]] <= 1024)
    assert batches == [[0, 1], [2, 3, 4], [5, 6, 7, 8]]  # shorter texts fill a batch, up to batch_size
    assert token_budget_batches(order, [2000] + lengths[1:], 4, budget=1024)[0] == [0]  # one over the budget alone


def test_padded_queries_give_the_unpadded_vectors(prompted, tmp_path):
    """Queries are padded to a multiple of QUERY_PAD_TO tokens (few input shapes, prepared at load);
    the attention mask keeps the vector what it was."""
    from indexer.encoders import QUERY_PAD_TO

    openvino = OpenVinoEncoder("m", str(prompted), tmp_path)
    for text in ("aspirin", "does aspirin lower the risk of a first heart attack in adults over fifty"):
        padded = openvino.encode_queries([text])[0]
        plain = openvino._encode([text], "query: ", batch_size=1)[0]
        assert float(padded @ plain) >= 0.99999
    assert QUERY_PAD_TO > 1
