"""Train a cross-encoder reranker on a collection's judgments (see reranker/training.py).

    python manage.py train_reranker scifact --pseudo-queries 5000 --epochs 2

1. Mining, through the project's own search (search/offline.py): each judged query's first-stage
   candidates (hard negatives; judged-relevant documents are never negatives), and optionally
   documents' titles as pseudo-queries for their text, with their own candidates.
2. Training (CUDA when present), a seeded share of the judged queries held out.
3. A versioned model directory with a model card; installed as the collection's reranker only
   when its held-out nDCG@10 beats the first stage's, otherwise the command fails and says so.

`--save-data F` stops after mining and writes the data (e.g. for a GPU machine, where
`python -m reranker.training F OUT` trains without the database or Elasticsearch);
`--data F` trains from such a file instead of mining.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from searchsite.progress import progress

from indexer.models import Collection, Document
from reranker.cross_encoder import RerankerUnavailable, load_reranker
from reranker.fusion import ModelFusion
from reranker.judgments import collection_qrels
from reranker.onnx_export import ExportError, export
from reranker.precision import PRECISIONS, pick_device
from reranker.scorers import OnnxScorer, thread_count
from reranker.tasks import warm_up
from reranker.training import (CHUNK_KEY, JudgedQuery, TrainingData, TrainingError, TrainingSettings, int8_judgment,
                               save, split_queries, train)
from search import offline
from search.errors import SearchBackendError

BODY = "body:"  # document keys of pseudo-query passages (text without its title)
CHUNK = CHUNK_KEY  # passage keys of one chunk ("chunk:<external id>/<n>"), as the search sends it


def mine(collection: Collection, mode: str, depth: int, pseudo_queries: int, seed: int, stdout) -> TrainingData:
    queries, qrels = collection_qrels(collection)
    if not qrels:
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
            titled = list(Document.objects.filter(collection=collection).exclude(title="")
                          .values_list("external_id", "title", "text"))
            # A seeded, stable choice of documents.
            titled.sort(key=lambda row: hashlib.sha256(f"{seed}:{row[0]}".encode()).hexdigest())
            chosen = titled[:pseudo_queries]
            titles = offline.encoded_in_batches(collection, [title for _, title, _ in chosen])
            for (external_id, title, text), _ in progress(zip(chosen, titles), total=len(chosen),
                                                          desc="mining title pseudo-queries", unit="query"):
                hits = offline.first_stage_hits(collection, title, mode, depth)
                best = {}
                for hit in hits:
                    best.setdefault(hit.external_id, hit)
                # The title is the query, so no passage may contain a title (the positive's own
                # title would give the answer away): chunk texts only.
                for other_id, hit in best.items():
                    documents.setdefault(BODY + other_id, hit.text)
                documents[BODY + external_id] = text
                pseudo.append(JudgedQuery(title, {BODY + external_id: 1}, [BODY + d for d in best], kind="title"))
    except SearchBackendError as exc:
        raise CommandError(f"the first stage failed while mining: {exc}") from None

    # Judged documents the first stage did not return: title + text, cut by the model's limit
    # (the same start as their first chunk's passage).
    missing = {doc for q in judged_queries for doc in q.judged if doc not in documents}
    for external_id, title, text in Document.objects.filter(collection=collection, external_id__in=missing) \
            .values_list("external_id", "title", "text"):
        documents[external_id] = f"{title}\n{text}" if title else text
    stdout.write(f"mined {len(judged_queries)} judged queries and {len(pseudo)} title pseudo-queries "
                 f"({mode} first stage, {depth} chunks each); {len(documents)} passages")
    return TrainingData(queries=judged_queries, documents=documents, pseudo_queries=pseudo,
                        first_stage=f"{mode}, depth {depth} chunks, collection {collection.slug}", mode=mode)


def cpu_runtime(device: str) -> bool:
    """True when the held-out queries are scored as a CPU worker serves the model: through ONNX
    Runtime (training on a CPU, RERANKER_RUNTIME not forcing torch)."""
    return pick_device(device) == "cpu" and settings.RERANKER_RUNTIME != "torch"


def onnx_scorer(model, directory: Path) -> OnnxScorer:
    """Save the trained model into its directory, export it (reranker/onnx_export.py) and score
    through ONNX Runtime, as a CPU rerank worker will."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save(str(directory))
    export(directory)
    return OnnxScorer(directory, False, model.max_seq_length, settings.RERANKER_BATCH_SIZE,
                      thread_count(settings.RERANKER_THREADS))


def judge_int8(result, directory: Path, data: TrainingData, stdout) -> list[str]:
    """After training on a CPU: judge int8 on the held-out queries (reranker.training.judge_int8)."""
    settings_ = result.settings
    _, heldout = split_queries(data.queries, settings_.heldout_fraction, settings_.seed)
    judgment, lines = int8_judgment(
        directory, heldout, data.documents, settings_.rerank_top, data.mode,
        ModelFusion.from_dict(result.heldout["fusion"]), result.model.max_seq_length, settings.RERANKER_BATCH_SIZE,
        thread_count(settings.RERANKER_THREADS),
        progress=lambda total, desc: progress(total=total, desc=desc, unit="query"), float32_logits=result.heldout_logits)
    stdout.write(f"int8 check: {judgment['reason']}: {'int8' if judgment['allowed'] else 'float32'} on CPUs")
    return lines


def models_dir() -> Path:
    """Where trained rerankers go unless --output says otherwise (demo_reranker looks here too)."""
    return settings.BASE_DIR / "var" / "rerankers"


class Command(BaseCommand):
    help = "Fine-tune a cross-encoder reranker on a collection's judgments, with hard negatives from its search."

    def add_arguments(self, parser):
        d = TrainingSettings()
        parser.add_argument("collection", help="collection slug")
        parser.add_argument("--base", default=d.base, help="base model: a transformer (gets mean pooling and a "
                            "new head) or a CrossEncoder directory (default: the packaged all-MiniLM-L6-v2)")
        parser.add_argument("--epochs", type=int, default=d.epochs)
        parser.add_argument("--max-length", type=int, default=d.max_length, help="tokens per (query, passage) pair")
        parser.add_argument("--negatives", type=int, default=d.negatives, help="hard negatives per positive")
        parser.add_argument("--negatives-from-top", type=int, default=d.negatives_from_top,
                            help="negatives are drawn from this many first-stage documents")
        parser.add_argument("--pseudo-queries", type=int, default=0,
                            help="documents whose title becomes a pseudo-query for their text (e.g. 5000; "
                                 "costs one search each, and training time)")
        parser.add_argument("--mode", choices=offline.REPORT_ORDER, default="hybrid", help="first stage to mine from")
        parser.add_argument("--batch-groups", type=int, default=d.groups_per_batch,
                            help="groups (1 positive + K negatives) per optimiser step")
        parser.add_argument("--lr-body", type=float, default=d.lr_body)
        parser.add_argument("--lr-head", type=float, default=d.lr_head)
        parser.add_argument("--heldout", type=float, default=d.heldout_fraction, help="share of judged queries held out")
        parser.add_argument("--rerank-top", type=int, default=settings.RERANK_TOP_N,
                            help="held-out evaluation reranks this many candidates (default RERANK_TOP_N)")
        parser.add_argument("--seed", type=int, default=d.seed)
        parser.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: epochs decide)")
        parser.add_argument("--device", default="auto", help="auto (cuda when present), cuda, mps or cpu")
        parser.add_argument("--precision", default=settings.RERANKER_PRECISION, choices=PRECISIONS,
                            help="default RERANKER_PRECISION; auto: bfloat16 autocast on CUDA and on CPUs with native "
                                 "bfloat16, else float32 (RERANKER_PRECISION=float32 trains as a CPU without "
                                 "bfloat16 would)")
        parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
        parser.add_argument("--layers", type=int, default=d.layers,
                            help="keep the base's first N transformer layers (0: all; 2 gives a CPU-speed reranker)")
        parser.add_argument("--freeze-embeddings", action="store_true",
                            help="do not update the token embeddings (faster steps on a CPU)")
        parser.add_argument("--output", help="parent folder of the versioned model directory "
                                             "(default var/rerankers)")
        parser.add_argument("--no-install", action="store_true", help="never make it the collection's reranker")
        parser.add_argument("--save-data", help="mine, write the training data to this file (.json or .json.gz), stop")
        parser.add_argument("--data", help="train from a file written by --save-data instead of mining")
        parser.add_argument("--install-trained", metavar="DIR",
                            help="install a model trained elsewhere (`python -m reranker.training`, e.g. on a GPU) "
                                 "after checking the held-out numbers in its training.json; no training")

    def handle(self, *args, **options):
        collection = Collection.objects.filter(slug=options["collection"]).first()
        if collection is None:
            raise CommandError(f"no collection with slug {options['collection']!r}")
        for name in ("epochs", "max_length", "negatives", "batch_groups", "rerank_top", "negatives_from_top"):
            if options[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0 < options["heldout"] < 1:
            raise CommandError("--heldout must be between 0 and 1 (a share of the judged queries)")
        if options["install_trained"]:
            return self.install_trained(collection, Path(options["install_trained"]).resolve())
        if options["threads"]:
            import torch

            torch.set_num_threads(options["threads"])
        train_settings = TrainingSettings(
            base=options["base"], epochs=options["epochs"], max_length=options["max_length"],
            negatives=options["negatives"], negatives_from_top=options["negatives_from_top"],
            groups_per_batch=options["batch_groups"], lr_body=options["lr_body"], lr_head=options["lr_head"],
            heldout_fraction=options["heldout"], rerank_top=options["rerank_top"], seed=options["seed"],
            max_steps=options["max_steps"], device=options["device"], precision=options["precision"],
            layers=options["layers"], freeze_embeddings=options["freeze_embeddings"],
        )
        depth = max(train_settings.negatives_from_top, train_settings.rerank_top) * 2
        if options["data"]:
            try:
                data = TrainingData.from_json(options["data"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CommandError(f"cannot read training data {options['data']}: {exc}") from None
        else:
            data = mine(collection, options["mode"], depth, options["pseudo_queries"], options["seed"], self.stdout)
        if options["save_data"]:
            data.to_json(options["save_data"])
            self.stdout.write(f"training data written to {options['save_data']}")
            return

        name = f"{collection.slug}-reranker-{timezone.now():%Y%m%d-%H%M%S}"
        parent = Path(options["output"]) if options["output"] else models_dir()
        directory = parent / name
        onnx = cpu_runtime(train_settings.device)
        try:
            result = train(data, train_settings, progress=lambda total, desc: progress(total=total, desc=desc, unit="step"
                                                                                        if desc == "training" else "query"),
                           echo=self.stdout.write,
                           heldout_scorer=(lambda model: onnx_scorer(model, directory)) if onnx else None)
        except TrainingError as exc:
            raise CommandError(str(exc)) from None
        except ExportError as exc:
            raise CommandError(f"the model trained but its ONNX export failed: {exc}") from None
        if onnx and result.heldout.get("queries"):
            result.runtime_card = judge_int8(result, directory, data, self.stdout)
        h = result.heldout
        first, reranked = h["first_stage"].get("ndcg@10"), h["reranked"].get("ndcg@10")
        final = (h.get("final") or h["reranked"]).get("ndcg@10")
        loss = result.loss_log[-1]["loss"] if result.loss_log else float("nan")
        self.stdout.write(f"trained {result.steps} steps in {result.seconds:.0f} s on {result.device}; last loss "
                          f"{loss:.4f} (constant predictor {result.constant_loss:.4f})")
        if first is None:
            raise CommandError("no held-out query: cannot tell whether the model helps; not installed")
        self.stdout.write(f"held-out ({h['queries']} queries, top {h['rerank_top']}): nDCG@10 first stage "
                          f"{first:.4f} → reranked {reranked:.4f} → fused with the first stage {final:.4f} (cross-validated) "
                          f"(fusion {h.get('fusion')})")
        if not result.beats_first_stage:
            save(result, directory, name, "no: held-out nDCG@10 does not beat the first stage", weights=not onnx)
            raise CommandError(
                f"NOT INSTALLED: reranking makes the held-out queries worse or no better (nDCG@10 {first:.4f} → "
                f"{final:.4f}); the model is kept for inspection in {directory}. Try more data "
                "(--pseudo-queries), more steps (--epochs) or a GPU.")
        installed = "no (--no-install)" if options["no_install"] else f"yes, as the reranker of {collection.slug}"
        save(result, directory, name, installed, weights=not onnx)
        if not onnx:
            self.export_for_cpu(directory)
        if not options["no_install"]:
            collection.reranker_model = str(directory)
            collection.save(update_fields=["reranker_model", "updated_at"])
            self.send_warm_up(directory)
        self.stdout.write(self.style.SUCCESS(f"saved {directory} (model card: {directory / 'README.md'}); "
                                             f"installed: {installed}"))

    def export_for_cpu(self, directory: Path) -> None:
        """Trained on a GPU: export for the CPU workers too (int8 stays unjudged, so they run float32)."""
        try:
            export(directory)
        except ExportError as exc:
            self.stdout.write(f"no ONNX export ({exc}); CPU workers will run it in torch")

    def send_warm_up(self, directory: Path) -> None:
        """Ask a rerank worker to load the new model now, not on the first search (which
        would wait past RERANK_TIMEOUT and show "not reranked")."""
        from kombu.exceptions import OperationalError

        try:
            # Pointless once a search has loaded it: dropped if no worker takes it within a minute.
            warm_up.apply_async(args=[[str(directory)]], retry=False, expires=60, ignore_result=True)
        except OperationalError as exc:
            self.stdout.write(f"could not reach the rerank queue to warm the model up ({exc}); "
                              "the first search with it will load it")

    def install_trained(self, collection: Collection, directory: Path) -> None:
        """The same rule as after training here: installed only if it beat the first stage."""
        import json

        try:
            report = json.loads((directory / "training.json").read_text())
            first = report["heldout"]["first_stage"]["ndcg@10"]
            reranked = (report["heldout"].get("final") or report["heldout"]["reranked"])["ndcg@10"]
        except (OSError, ValueError, KeyError) as exc:
            raise CommandError(f"{directory} has no readable training.json with held-out nDCG@10: {exc}") from None
        try:
            load_reranker(str(directory))
        except RerankerUnavailable as exc:
            raise CommandError(str(exc)) from None
        if not reranked > first:
            raise CommandError(f"NOT INSTALLED: held-out nDCG@10 {first:.4f} → {reranked:.4f} does not beat "
                               "the first stage")
        collection.reranker_model = str(directory)
        collection.save(update_fields=["reranker_model", "updated_at"])
        self.send_warm_up(directory)
        self.stdout.write(self.style.SUCCESS(
            f"installed {directory} as the reranker of {collection.slug} (held-out nDCG@10 {first:.4f} → {reranked:.4f})"))

