"""`manage.py quantize_embedding` as `make models` runs it: bad input refused, a judged int8 model
left alone with --if-missing, the judgment read back from beside the export."""
import json
import shutil
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from indexer.embedding import resolve_model_path
from indexer.encoders import INT8_TOLERANCE, quantize_openvino, record_int8_judgment
from relevance.embedding_int8 import existing_judgment

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELS_DIR", str(tmp_path))
    directory = tmp_path / "minilm"
    shutil.copytree(resolve_model_path(MINILM), directory)
    return directory


def beir(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "aspirin"}) + "\n")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "aspirin?"}) + "\n")
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return folder


def test_bad_input_is_refused_before_any_work(models, tmp_path):
    with pytest.raises(CommandError, match="has no corpus.jsonl"):
        call_command("quantize_embedding", str(models), "--judge-on", str(tmp_path / "nowhere"))
    folder = beir(tmp_path / "set")
    with pytest.raises(CommandError, match="at least 8 documents"):
        call_command("quantize_embedding", str(models), "--judge-on", str(folder), "--calibration", "2")
    with pytest.raises(CommandError, match="judging int8 needs at least 20"):  # one judged query only
        call_command("quantize_embedding", str(models), "--judge-on", str(folder), "--if-missing")


def test_if_missing_leaves_a_judged_int8_model_alone(models, tmp_path, capsys):
    assert existing_judgment(str(models)) == {}
    quantize_openvino(models, tmp_path, [f"A text about sample {i}." for i in range(16)])
    assert existing_judgment(str(models)) == {}  # made, not judged
    record_int8_judgment(models, tmp_path, 0.70, 0.70 - INT8_TOLERANCE / 2, 40, "test queries")
    assert existing_judgment(str(models))["allowed"] is True
    call_command("quantize_embedding", str(models), "--judge-on", str(beir(tmp_path / "set")), "--if-missing")
    out = capsys.readouterr().out
    assert "int8 already judged" in out and out.rstrip().endswith("it serves")
