"""Train, judge and install a collection's reranker: mine candidates through the search, train
(reranker/training.py), export for the CPU, install only when it beats the first stage.
`manage.py train_reranker` and the admin's train runs (relevance/run_tasks.py) call these.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from celery import current_app
from django.conf import settings
from django.core.management.base import CommandError
from kombu.exceptions import OperationalError
from django.utils import timezone
from common.progress import progress

from indexer.models import Collection, Document
from reranker.cross_encoder import RerankerUnavailable, load_reranker
from reranker.fusion import ModelFusion
from relevance.judgments import collection_qrels
from relevance.pseudo_queries import KINDS as PSEUDO_KINDS
from relevance.pseudo_queries import pseudo_queries as make_pseudo_queries
from reranker.openvino_export import ExportError, calibration_pairs, export
from common.precision import pick_device
from reranker.scorers import OpenVinoScorer, thread_count
from reranker.training import (CHUNK_KEY, JudgedQuery, TrainingData, TrainingError, TrainingSettings, heldout_metrics,
                               int8_judgment, query_kinds, save, split_queries, train)
from search import offline
from search.errors import SearchBackendError

BODY = "body:"  # document keys of pseudo-query passages (text without its title)
WARM_UP_TASK = "reranker.tasks.warm_up"  # reranker/tasks.py
CHUNK = CHUNK_KEY  # passage keys of one chunk ("chunk:<external id>/<n>"), as the search sends it


# Training settings per device kind (train_reranker options: the demo's and the automatic runs'); chosen by measurement, see
# docs/relevance.md.
RECIPES = {
    "cuda": {"pseudo_queries": 3000, "epochs": 2, "batch_groups": 16, "max_length": 256},
    # Three layers of the base, 128-token pairs, groups of 1 + 3, a high learning rate, 1,000 title
    # pseudo-queries seen twice (chosen on held-out training queries: docs/relevance.md).
    "cpu": {"layers": 3, "pseudo_queries": 1000, "epochs": 2, "batch_groups": 16, "max_length": 128, "negatives": 3,
            "lr_body": 4e-4, "lr_head": 1e-2},
}


# Pseudo-only training: pseudo-queries asked for when --pseudo-queries is not given, and
# the fewest that make a training (fewer: the run says why nothing was trained).
PSEUDO_ONLY_QUERIES = 2000
PSEUDO_ONLY_MIN_QUERIES = 50


def no_pseudo_queries(collection: Collection, total: int, made, kinds: tuple[str, ...]) -> str:
    """Why pseudo-only training cannot start: how many documents gave a pseudo-query of each kind."""
    ways = {"title": "a title that reads like a query (a few words, not a file name, not the text's first line)",
            "sentence": "a leading sentence that does (4 to 40 words of prose, with text after it)",
            "terms": "key terms (3 or more words that other documents use too)"}
    counts = {kind: sum(q.kind == kind for q in made) for kind in kinds}
    gave = "; ".join(f"{counts[kind]} gave {ways[kind]}" for kind in kinds)
    return (f"nothing trained, no reranker installed: of the {total} documents of {collection.slug!r}, {gave}; "
            f"pseudo-only training needs {PSEUDO_ONLY_MIN_QUERIES} pseudo-queries. Give the documents titles, "
            "or judge some queries (import_judgments, the search page).")


def mine(collection: Collection, mode: str, depth: int, pseudo_queries: int, seed: int, stdout,
         progress=progress, judgments: str = "staff", pseudo_only: bool = False,
         heldout: float = 0.2, pseudo_kinds: tuple[str, ...] = ()) -> TrainingData:
    """Training data from the collection's judged queries (`judgments`: relevance/judgments.py)
    and `pseudo_queries` pseudo-queries (relevance/pseudo_queries.py) of `pseudo_kinds` (default:
    every kind with `pseudo_only`, else titles). `pseudo_only`: train on pseudo-queries alone;
    the judged queries, where there are any, all decide the install, else a `heldout` share of
    the pseudo-queries (silver queries, never trained on) does."""
    queries, qrels = collection_qrels(collection, judgments)
    if pseudo_only and not pseudo_queries:
        pseudo_queries = PSEUDO_ONLY_QUERIES
    if not qrels and not pseudo_only:
        if judgments == "implicit":
            raise CommandError(f"collection {collection.slug!r} has no implicit judgments: they come from users' "
                               "clicks (`manage.py click_judgments`)")
        raise CommandError(f"collection {collection.slug!r} has no judgments: import some "
                           "(`manage.py import_judgments`) or mark results on the search page")
    documents: dict[str, str] = {}
    judged_queries = []
    try:
        qids = list(qrels)
        texts = offline.encoded_in_batches(collection, [queries[qid] for qid in qids])
        for qid, _ in progress(zip(qids, texts), total=len(qids), desc="mining judged queries", unit="query"):
            judged = qrels[qid]
            # Every mode's candidates: training uses `mode`'s, the held-out evaluation chooses a
            # fusion with the first stage per mode (reranker/fusion.py).
            by_mode, passages = {}, {}
            for each in (mode, *[m for m in offline.REPORT_ORDER if m != mode]):
                best = {}
                for hit in offline.first_stage_hits(collection, queries[qid], each, depth):
                    best.setdefault(hit.external_id, hit)  # a document's best chunk is what the reranker sees
                for external_id, hit in best.items():
                    documents.setdefault(external_id, offline.passage_text(hit))
                    documents.setdefault(f"{CHUNK}{external_id}/{hit.chunk}", offline.passage_text(hit))
                by_mode[each] = list(best)
                passages[each] = [f"{CHUNK}{external_id}/{hit.chunk}" for external_id, hit in best.items()]
            judged_queries.append(JudgedQuery(queries[qid], dict(judged), by_mode[mode], candidates_by_mode=by_mode,
                                              passages_by_mode=passages))

        pseudo = []
        if pseudo_queries:
            kinds = tuple(pseudo_kinds or (PSEUDO_KINDS if pseudo_only else ("title",)))
            rows = list(Document.objects.filter(collection=collection).values_list("external_id", "title", "text"))
            try:
                made = make_pseudo_queries(rows, collection.language, kinds)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            if pseudo_only and len(made) < PSEUDO_ONLY_MIN_QUERIES:
                raise CommandError(no_pseudo_queries(collection, len(rows), made, kinds))
            # A seeded, stable choice of documents.
            made.sort(key=lambda q: hashlib.sha256(f"{seed}:{q.external_id}".encode()).hexdigest())
            chosen = made[:pseudo_queries]
            encoded = offline.encoded_in_batches(collection, [q.query for q in chosen])
            for made_query, _ in progress(zip(chosen, encoded), total=len(chosen),
                                          desc="mining pseudo-queries", unit="query"):
                hits = offline.first_stage_hits(collection, made_query.query, mode, depth)
                best = {}
                for hit in hits:
                    best.setdefault(hit.external_id, hit)
                # A title query must not meet a passage with a title (the positive's own title
                # would give the answer away): chunk texts only. The positive is the text the
                # query stands for (a leading sentence's: the text after it).
                for other_id, hit in best.items():
                    documents.setdefault(BODY + other_id, hit.text)
                documents[BODY + made_query.external_id] = made_query.passage
                pseudo.append(JudgedQuery(made_query.query, {BODY + made_query.external_id: 1},
                                          [BODY + d for d in best], kind=made_query.kind))
    except SearchBackendError as exc:
        raise CommandError(f"the first stage failed while mining: {exc}") from None
    if not any(q.candidates for q in [*judged_queries, *pseudo]):
        # Negatives would all be random documents and held-out figures meaningless.
        raise CommandError(f"the first stage returned no candidates for any query of {collection.slug!r}: "
                           "is it indexed? (its status on the admin's Collections page; manage.py rebuild_index)")

    # Judged documents the first stage did not return: title + text, cut by the model's limit
    # (the same start as their first chunk's passage).
    missing = {doc for q in judged_queries for doc in q.judged if doc not in documents}
    for external_id, title, text in Document.objects.filter(collection=collection, external_id__in=missing) \
            .values_list("external_id", "title", "text"):
        documents[external_id] = f"{title}\n{text}" if title else text
    stdout.write(f"mined {len(judged_queries)} judged queries and {len(pseudo)} pseudo-queries "
                 f"({query_kinds(pseudo) or 'none'}) "
                 f"({mode} first stage, {depth} chunks each); {len(documents)} passages")
    first_stage = f"{mode}, depth {depth} chunks, collection {collection.slug}"
    if not pseudo_only:
        return TrainingData(queries=judged_queries, documents=documents, pseudo_queries=pseudo,
                            first_stage=first_stage, mode=mode)
    if judged_queries:
        stdout.write(f"pseudo-only: training on the {len(pseudo)} pseudo-queries; the {len(judged_queries)} "
                     "judged queries decide the install (none trained on)")
        return TrainingData(queries=judged_queries, documents=documents, pseudo_queries=pseudo, first_stage=first_stage,
                            mode=mode, heldout_only=True, heldout_kind="judged")
    trained, silver = split_queries(pseudo, heldout, seed)
    stdout.write(f"pseudo-only: no judged queries; {len(silver)} pseudo-queries ({query_kinds(silver)}) "
                 "held out as silver queries "
                 f"(never trained on) decide the install, {len(trained)} are trained on")
    return TrainingData(queries=silver, documents=documents, pseudo_queries=trained, first_stage=first_stage,
                        mode=mode, heldout_only=True, heldout_kind="silver")


def cpu_runtime(device: str) -> bool:
    """True when the held-out queries are scored as a CPU worker serves the model: through
    OpenVINO (training on a CPU, RERANKER_RUNTIME not forcing torch)."""
    return pick_device(device) == "cpu" and settings.RERANKER_RUNTIME != "torch"


def openvino_scorer(model, directory: Path) -> OpenVinoScorer:
    """Save the trained model into its directory, export it (reranker/openvino_export.py) and
    score through OpenVINO, as a CPU rerank worker will."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save(str(directory))
    export(directory)
    return OpenVinoScorer(directory, False, model.max_seq_length, settings.RERANKER_BATCH_SIZE,
                      thread_count(settings.RERANKER_THREADS))


def judge_int8(result, directory: Path, data: TrainingData, stdout, progress=progress) -> list[str]:
    """After training on a CPU: make the int8 model, calibrated on training queries (judged ones
    not held out, then pseudo-queries), and judge it on the held-out queries
    (reranker.training.int8_judgment)."""
    settings_ = result.settings
    training, heldout = data.split(settings_.heldout_fraction, settings_.seed)
    judgment, lines = int8_judgment(
        directory, heldout, data.documents, settings_.rerank_top, data.mode,
        ModelFusion.from_dict(result.heldout["fusion"]), result.model.max_seq_length, settings.RERANKER_BATCH_SIZE,
        thread_count(settings.RERANKER_THREADS),
        progress=lambda total, desc: progress(total=total, desc=desc, unit="query"), float32_logits=result.heldout_logits,
        calibration=calibration_pairs([*training, *data.pseudo_queries], data.documents), echo=stdout.write)
    stdout.write(f"int8 check: {judgment['reason']}: {'int8' if judgment['allowed'] else 'float32'} on CPUs")
    return lines


def models_dir() -> Path:
    """Where trained rerankers go unless --output says otherwise (demo_reranker looks here too)."""
    return settings.BASE_DIR / "var" / "rerankers"


def check_options(options: dict) -> None:
    for name in ("epochs", "max_length", "negatives", "batch_groups", "rerank_top", "negatives_from_top"):
        if options[name] < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < options["heldout"] < 1:
        raise CommandError("--heldout must be between 0 and 1 (a share of the judged queries)")


@dataclass
class Trained:
    """The outcome of a training: the model directory (None when --save-data stopped after
    mining), whether it was installed, and, when the install rule refused it, why (the
    directory and its card are kept for inspection)."""
    directory: Path | None
    message: str
    installed: bool = False
    refusal: str = ""


def train_collection(collection: Collection, options: dict, stdout, progress=progress) -> Trained:
    """The body of `manage.py train_reranker` (options: the command's, by their option names),
    also run by the admin's train task (relevance/run_tasks.py) with its own `stdout` (an object
    with `write(line)`) and `progress`. Bad input and failures raise CommandError."""
    check_options(options)
    if options["threads"]:
        import torch

        torch.set_num_threads(options["threads"])
    train_settings = TrainingSettings(
        base=options["base"], epochs=options["epochs"], max_length=options["max_length"],
        negatives=options["negatives"], negatives_from_top=options["negatives_from_top"],
        groups_per_batch=options["batch_groups"], lr_body=options["lr_body"], lr_head=options["lr_head"],
        heldout_fraction=options["heldout"], rerank_top=options["rerank_top"], seed=options["seed"],
        max_steps=options["max_steps"], device=options["device"], precision=options["precision"],
        layers=options["layers"], pooling=options["pooling"],
        freeze_embeddings=options["freeze_embeddings"],
    )
    depth = max(train_settings.negatives_from_top, train_settings.rerank_top) * 2
    if options["data"]:
        try:
            data = TrainingData.from_json(options["data"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CommandError(f"cannot read training data {options['data']}: {exc}") from None
    else:
        data = mine(collection, options["mode"], depth, options["pseudo_queries"], options["seed"], stdout,
                    progress=progress, judgments=options.get("judgments", "staff"),
                    pseudo_only=options.get("pseudo_only", False), heldout=options["heldout"],
                    pseudo_kinds=tuple(options.get("pseudo_kinds") or ()))
    if options["save_data"]:
        data.to_json(options["save_data"])
        stdout.write(f"training data written to {options['save_data']}")
        return Trained(directory=None, message=f"training data written to {options['save_data']}")

    name = f"{collection.slug}-reranker-{timezone.now():%Y%m%d-%H%M%S}"
    parent = Path(options["output"]) if options["output"] else models_dir()
    directory = parent / name
    on_cpu = cpu_runtime(train_settings.device)
    try:
        result = train(data, train_settings, progress=lambda total, desc: progress(total=total, desc=desc, unit="step"
                                                                                    if desc == "training" else "query"),
                       echo=stdout.write,
                       heldout_scorer=(lambda model: openvino_scorer(model, directory)) if on_cpu else None)
    except TrainingError as exc:
        raise CommandError(str(exc)) from None
    except ExportError as exc:
        raise CommandError(f"the model trained but its OpenVINO export failed: {exc}") from None
    if on_cpu and result.heldout.get("queries"):
        result.runtime_card = judge_int8(result, directory, data, stdout, progress=progress)
    h = result.heldout
    first, reranked = h["first_stage"].get("ndcg@10"), h["reranked"].get("ndcg@10")
    final = (h.get("final") or h["reranked"]).get("ndcg@10")
    loss = result.loss_log[-1]["loss"] if result.loss_log else float("nan")
    stdout.write(f"trained {result.steps} steps in {result.seconds:.0f} s on {result.device}; last loss "
                 f"{loss:.4f} (constant predictor {result.constant_loss:.4f})")
    if first is None:
        raise CommandError("no held-out query: cannot tell whether the model helps; not installed")
    stdout.write(f"held-out ({h['queries']} queries, top {h['rerank_top']}): nDCG@10 first stage "
                 f"{first:.4f} → reranked {reranked:.4f} → fused with the first stage {final:.4f} (cross-validated) "
                 f"(fusion {h.get('fusion')})")
    if not result.beats_first_stage:
        save(result, directory, name, "no: held-out nDCG@10 does not beat the first stage", weights=not on_cpu)
        return Trained(directory=directory, message=f"saved {directory}; not installed", refusal=(
            f"NOT INSTALLED: reranking makes the held-out queries worse or no better (nDCG@10 {first:.4f} → "
            f"{final:.4f}); the model is kept for inspection in {directory}. Try more data "
            "(--pseudo-queries), more steps (--epochs) or a GPU."))
    incumbent = collection.reranker_model.strip()
    if options.get("replace_if_better") and incumbent and not options["no_install"]:
        held = installed_model_figure(incumbent, data, train_settings, stdout, progress)
        if held is not None:
            result.heldout["installed_model"] = {"model": incumbent, "final": {"ndcg@10": held}}
            if not final > held:
                save(result, directory, name, f"no: held-out nDCG@10 {final:.4f} does not beat the installed "
                     f"model's {held:.4f} on the same queries", weights=not on_cpu)
                return Trained(directory=directory, message=f"saved {directory}; not installed", refusal=(
                    f"NOT INSTALLED: the installed reranker ({incumbent}) is as good or better on the same "
                    f"{h['queries']} held-out queries (nDCG@10 {held:.4f}, the new one {final:.4f}); it stays. "
                    f"The new model is kept for inspection in {directory}."))
    installed = "no (--no-install)" if options["no_install"] else f"yes, as the reranker of {collection.slug}"
    if "installed_model" in result.heldout:
        installed += f" (the model it replaces scored nDCG@10 {result.heldout['installed_model']['final']['ndcg@10']:.4f})"
    save(result, directory, name, installed, weights=not on_cpu)
    if not on_cpu:
        export_for_cpu(directory, stdout)
    if not options["no_install"]:
        install(collection, directory)
        send_warm_up(directory, stdout)
    return Trained(directory=directory, installed=not options["no_install"],
                   message=f"saved {directory} (model card: {directory / 'README.md'}); installed: {installed}")


def installed_model_figure(model_id: str, data: TrainingData, train_settings: TrainingSettings, stdout,
                           progress=progress) -> float | None:
    """Held-out nDCG@10 of the search with the installed reranker (its fusion chosen on the
    queries, cross-validated, as for the new model) on this training's held-out queries; None
    when it cannot be loaded (then nothing stands in the new model's way)."""
    _, heldout = data.split(train_settings.heldout_fraction, train_settings.seed)
    try:
        scorer = load_reranker(model_id).scorer
    except RerankerUnavailable as exc:
        stdout.write(f"the installed reranker cannot be loaded to compare with ({exc}); it is replaced")
        return None
    figures = heldout_metrics(scorer, heldout, data.documents, train_settings.rerank_top, data.mode,
                              train_settings.seed, lambda total, desc: progress(total=total, desc=f"{desc}, installed "
                                                                                "model", unit="query"))
    held = (figures.get("final") or figures["reranked"])["ndcg@10"]
    stdout.write(f"the installed reranker on the same {figures['queries']} held-out queries: nDCG@10 {held:.4f}")
    return held


def export_for_cpu(directory: Path, stdout) -> None:
    """Trained on a GPU: export for the CPU workers too (int8 stays unjudged, so they run float32)."""
    try:
        export(directory)
    except ExportError as exc:
        stdout.write(f"no OpenVINO export ({exc}); CPU workers will run it in torch")


def install(collection: Collection, directory: Path) -> None:
    """Make the model the collection's reranker (a note on why it had none no longer holds)."""
    collection.reranker_model = str(directory)
    collection.reranker_note = ""
    collection.save(update_fields=["reranker_model", "reranker_note", "updated_at"])


def send_warm_up(directory: Path, stdout) -> None:
    """Ask a rerank worker to load the new model now, not on the first search (which
    would wait past RERANK_TIMEOUT and show "not reranked")."""
    try:
        # By name, so this service does not import the worker's task module. Pointless once a
        # search has loaded it: dropped if no worker takes it within a minute.
        current_app.send_task(WARM_UP_TASK, args=[[str(directory)]], queue=settings.RERANK_QUEUE, retry=False,
                              expires=60, ignore_result=True)
    except OperationalError as exc:
        stdout.write(f"could not reach the rerank queue to warm the model up ({exc}); "
                     "the first search with it will load it")


def heldout_figures(directory: Path) -> tuple[float, float]:
    """(first stage, search with the model) held-out nDCG@10 from a model directory's training.json."""
    import json

    try:
        report = json.loads((directory / "training.json").read_text())
        first = report["heldout"]["first_stage"]["ndcg@10"]
        reranked = (report["heldout"].get("final") or report["heldout"]["reranked"])["ndcg@10"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CommandError(f"{directory} has no readable training.json with held-out nDCG@10: {exc}") from None
    return first, reranked


def install_trained(collection: Collection, directory: Path, stdout) -> str:
    """`--install-trained` (and the admin's install and roll back): the same rule as after
    training here, installed only if it beat the first stage. Returns what was done."""
    first, reranked = heldout_figures(directory)

    try:
        load_reranker(str(directory))
    except RerankerUnavailable as exc:
        raise CommandError(str(exc)) from None
    if not reranked > first:
        raise CommandError(f"NOT INSTALLED: held-out nDCG@10 {first:.4f} → {reranked:.4f} does not beat "
                           "the first stage")
    install(collection, directory)
    send_warm_up(directory, stdout)
    return f"installed {directory} as the reranker of {collection.slug} (held-out nDCG@10 {first:.4f} → {reranked:.4f})"
