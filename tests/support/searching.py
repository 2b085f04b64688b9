"""Shared set-up of the search tests (tests/integration/test_search.py, test_api.py, test_access.py).

- `build_reranker()`: a cross-encoder built here from the packaged MiniLM with a fresh one-output
  head (no pretrained reranker can be installed). Its scores mean nothing: tests assert the
  mechanics (order = sort by its logits, scores, flags), never quality.
- `SEARCH_RERANK_QUEUE`: the queue of the `rerank_worker` fixture (tests/integration/conftest.py), a
  real `rerank` worker process that gets that model through its environment (RERANKER_MODEL),
  consuming a queue of its own so that it never shares work with the worker of the
  `celery_workers` fixture (which has no model).
- `make_corpus()`: collections written to the database and indexed through the real indexing
  pipeline (indexer/pipeline.py, called synchronously), into the run's own Elasticsearch prefix.
"""
from __future__ import annotations

import os
from pathlib import Path


SEARCH_RERANK_QUEUE = "rerank-search"
_started: dict = {}


def build_reranker() -> str:
    if "model" not in _started:
        import torch
        from sentence_transformers import CrossEncoder

        from indexer.embedding import resolve_model_path

        torch.manual_seed(1234)  # a different head each run would still pass; this one is fixed
        path = Path(os.environ["SEARCHSITE_TEST_TMP"]) / "test-reranker"
        # MiniLM's body with a random head: its BERT pooler is trained. A converted catalogue model
        # (bge-small) has no pooler in its ONNX export (zeros), so a CLS-pooler head on it would
        # score every pair 0.
        CrossEncoder(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"), num_labels=1).save(str(path))
        _started["model"] = str(path)
    return _started["model"]


def search_settings(settings_fixture, model: str) -> None:
    """The web side (this process) of the same configuration as the worker."""
    settings_fixture.RERANK_QUEUE = SEARCH_RERANK_QUEUE
    settings_fixture.RERANKER_MODEL = model
    settings_fixture.RERANK_TIMEOUT = 60.0  # a shared 2-core machine: generous unless a test says otherwise
    # Depth by speed (reranker/speed.py) would vary with the machine's load (and is unknown
    # until the worker's warm-up has measured it): RERANK_TOP_N every time unless a test says
    # otherwise.
    settings_fixture.RERANK_MIN_CANDIDATES = settings_fixture.RERANK_TOP_N


# --------------------------------------------------------------------------- corpus

SCIENCE = [
    ("Telomerase activity in stem cells",
     "Telomerase adds telomeric repeats to chromosome ends. Stem cells keep high telomerase activity, which "
     "lets them divide many times without the telomere shortening seen in somatic cells."),
    ("Insulin signalling and glucose uptake",
     "Insulin binds its receptor on muscle and fat cells and triggers glucose uptake through GLUT4 transport "
     "to the membrane. Insulin resistance weakens this signalling in type 2 diabetes."),
    ("Vaccine adjuvants boost the immune response",
     "Adjuvants such as aluminium salts enhance the immune response to a vaccine antigen by activating innate "
     "immune cells and prolonging antigen presentation."),
    ("Kinase inhibitors in cancer therapy",
     "Tyrosine kinase inhibitors block signalling pathways that drive tumour growth; resistance mutations "
     "in the kinase domain often appear after months of therapy."),
    ("Gut bacteria and metabolism",
     "The gut microbiome ferments dietary fibre into short-chain fatty acids that influence host metabolism, "
     "insulin sensitivity and inflammation."),
    ("Neuron firing and memory",
     "Long-term potentiation strengthens synapses between neurons that fire together and is thought to "
     "underlie memory formation in the hippocampus."),
    ("Lipid membranes and cholesterol",
     "Cholesterol packs between phospholipids in the membrane, reducing fluidity and forming lipid rafts "
     "that gather receptors."),
    ("Antibody structure",
     "An antibody has two heavy and two light chains; the variable regions form the antigen binding site "
     "that recognises one epitope."),
]


def long_text(topic: str, paragraphs: int = 12) -> str:
    """A document long enough to span several chunks, mentioning `topic` throughout."""
    parts = []
    for i in range(paragraphs):
        parts.append(f"Section {i + 1}. Experiments on {topic} measured how the {topic} changed over {i + 2} "
                     f"weeks in {10 * (i + 1)} samples; the {topic} results were compared with controls and "
                     f"replicated in an independent cohort of patients and animal models.")
    return " ".join(parts)


def add_documents(collection, docs: list[tuple[str, str, str, dict]]) -> list:
    """docs: (external_id, title, text, metadata); returns the created rows."""
    from indexer.models import Document

    rows = [Document(collection=collection, external_id=e, title=t, text=x, metadata=m,
                     content_hash=Document.compute_hash(t, x, m)) for e, t, x, m in docs]
    return Document.objects.bulk_create(rows)


def index_now(es, *collections) -> None:
    """Index every document of the collections with the real pipeline, then make them visible."""
    from indexer.models import Document
    from indexer.pipeline import index_documents
    from indexer.store import alias_name

    for collection in collections:
        ids = list(Document.objects.filter(collection=collection).values_list("pk", flat=True))
        report = index_documents(ids)
        assert report.indexed == len(ids), report
        es.indices.refresh(index=alias_name(collection.slug))
        assert set(Document.objects.filter(collection=collection).values_list("status", flat=True)) == {"indexed"}


def drop_collections(es, *collections) -> None:
    from indexer.store import alias_name, get_store

    for collection in collections:
        get_store().drop_indices([f"{alias_name(collection.slug)}-*"])
        collection.delete()
