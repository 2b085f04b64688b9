"""An int8 bi-encoder for the CPU, made and judged: NNCF quantisation of the model's OpenVINO
export calibrated on documents, then nDCG@10 of exact search (every query against every document
of a sample, by dot product) with float32 and with int8 vectors on judged queries the calibration
never saw. int8 serves (indexer/encoders.py) only where it keeps float32's nDCG@10 within
INT8_TOLERANCE; the record beside the export also says how much faster it was on this CPU.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cpu import cpu_summary
from common.progress import progress
from indexer.embedding import resolve_model_path
from indexer.encoders import OpenVinoEncoder, export_dir, quantize_openvino, read_int8, record_int8_judgment
from indexer.model_catalog import models_dir
from reranker.metrics import evaluate_run
from relevance.judgments import read_qrels, read_queries

CALIBRATION_DOCUMENTS = 300


@dataclass
class Int8Judgment:
    float32_ndcg: float
    int8_ndcg: float
    queries: int
    documents: int
    speed: dict
    record: dict


def read_corpus(path: Path) -> dict[str, str]:
    corpus = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                corpus[str(record["_id"])] = "\n".join(p for p in (record.get("title") or "", record.get("text") or "") if p)
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a document object with _id ({exc})") from None
    return corpus


def sample(folder: Path, split: str, max_queries: int, max_documents: int, seed: int = 13,
           calibration_documents: int = CALIBRATION_DOCUMENTS):
    """(queries, qrels, documents judged or not, calibration documents): every document a chosen
    query judges, filled up with others to `max_documents`; calibration from the rest."""
    queries = read_queries(folder / "queries.jsonl")
    qrels = {q: r for q, r in read_qrels(folder / "qrels" / f"{split}.tsv").items()
             if q in queries and any(g > 0 for g in r.values())}
    rng = random.Random(seed)
    qids = sorted(qrels)
    rng.shuffle(qids)
    qids = sorted(qids[:max_queries])
    corpus = read_corpus(folder / "corpus.jsonl")
    judged = sorted({d for q in qids for d in qrels[q] if d in corpus})
    others = sorted(set(corpus) - set(judged))
    rng.shuffle(others)
    fill = max(0, max_documents - len(judged))
    chosen = judged + others[:fill]
    calibration = [corpus[d] for d in others[fill:fill + calibration_documents]]
    return ({q: queries[q] for q in qids}, {q: qrels[q] for q in qids}, {d: corpus[d] for d in chosen}, calibration)


def encode_in_turns(encoders: list, documents: dict[str, str], block: int = 64, progress=progress):
    """Every document's vector by each encoder, the encoders taking turns block by block (a
    shared machine's load falls on all alike), and each one's documents per second."""
    ids = list(documents)
    vectors = {e.precision: [] for e in encoders}
    seconds = {e.precision: 0.0 for e in encoders}
    for start in progress(range(0, len(ids), block), desc="documents, float32 and int8 in turns", unit="block"):
        texts = [documents[d] for d in ids[start:start + block]]
        for encoder in encoders:
            started = time.perf_counter()
            vectors[encoder.precision].append(encoder.encode_documents(texts))
            seconds[encoder.precision] += time.perf_counter() - started
    speed = {name: round(len(ids) / seconds[name], 2) for name in seconds}
    return ids, {name: np.concatenate(parts) for name, parts in vectors.items()}, speed


def exact_ndcg(encoder, ids: list[str], matrix: np.ndarray, queries: dict[str, str], qrels: dict) -> float:
    qids = list(queries)
    scores = encoder.encode_queries([queries[q] for q in qids]) @ matrix.T
    run = {q: [ids[i] for i in np.argsort(-row, kind="stable")[:100]] for q, row in zip(qids, scores)}
    return evaluate_run(run, qrels, {"ndcg": 10})["mean"]["ndcg@10"]


def installed_dir(model_id: str) -> Path:
    model_dir = Path(resolve_model_path(model_id))
    if not model_dir.is_dir():
        raise ValueError(f"{model_id!r} is not an installed model or a directory (manage.py install_model)")
    return model_dir


def existing_judgment(model_id: str) -> dict:
    """The judgment of the int8 model beside this model's export ({} when none was made or judged)."""
    return read_int8(export_dir(installed_dir(model_id), models_dir()) / "encoder.xml").get("judgment") or {}


def quantize_and_judge(model_id: str, folder: Path, split: str = "train", max_queries: int = 300,
                       max_documents: int = 2000, quantize: bool = True, progress=progress,
                       calibration_documents: int = CALIBRATION_DOCUMENTS) -> Int8Judgment:
    """`quantize=False` judges the int8 model made before (on another sample, say) again."""
    model_dir = installed_dir(model_id)
    queries, qrels, documents, calibration = sample(folder, split, max_queries, max_documents,
                                                    calibration_documents=calibration_documents)
    if len(queries) < 20:
        raise ValueError(f"{folder}: {len(queries)} judged queries in {split}; judging int8 needs at least 20")
    if quantize:
        quantize_openvino(model_dir, models_dir(), calibration)
    float32 = OpenVinoEncoder(model_id, str(model_dir), models_dir(), int8=False)
    int8 = OpenVinoEncoder(model_id, str(model_dir), models_dir(), int8=True)
    ids, matrices, rates = encode_in_turns([float32, int8], documents, progress=progress)
    speed = {"documents_per_second": rates, "cpu": cpu_summary()}
    f32 = exact_ndcg(float32, ids, matrices["float32"], queries, qrels)
    i8 = exact_ndcg(int8, ids, matrices["int8"], queries, qrels)
    record = record_int8_judgment(model_dir, models_dir(), f32, i8, len(queries),
                                  f"{folder.name} {split} ({len(documents)} documents)", speed=speed)
    return Int8Judgment(float32_ndcg=f32, int8_ndcg=i8, queries=len(queries), documents=len(documents),
                        speed=speed, record=record)
