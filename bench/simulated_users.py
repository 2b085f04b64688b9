"""Simulated users on SciFact: searches and clicks through the real API, the clicks turned into
implicit judgments, and (unless --skip-training) a reranker trained from them alone, against the
first stage and a pseudo-only reranker on held-out dev queries. Not a test: it prints a table.

1. A throwaway database and index prefix; SciFact's corpus (`--documents` N: the documents the
   dev judgments name plus the first N; 0: all) indexed with the real pipeline in this process.
2. The dev queries are split (seeded) in two: the *click* half is what the users search; the
   *held-out* half only ever scores the models.
3. `--searches` S searches: a user (an X-Search-Session id) picks a click-half query, sends
   GET /api/search (hybrid, first stage, k 10) and reads down the list: a result the dev qrels
   judge relevant is clicked with probability 0.9 × 0.75^(rank-1), any other with 0.03 ×
   0.75^(rank-1) (POST /api/clicks). Seeded.
4. `manage.py click_judgments`: the implicit judgments (analytics/click_model.py), and how well
   they agree with the dev qrels of the click half.
5. Unless --skip-training, three models with the CPU recipe of relevance/collection_training.RECIPES
   (--no-install): train_reranker --pseudo-only; --judgments implicit --pseudo-queries 0 (the
   clicks alone); --judgments both (the clicks and the recipe's title pseudo-queries: what the
   automatic run for new judgments trains), then evaluate hybrid with each on the held-out half
   (and the first stage).

    flock /tmp/bench.lock .venv/bin/python bench/simulated_users.py --documents 0 --searches 2000
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RUN = secrets.token_hex(3)
TMP = Path(tempfile.mkdtemp(prefix=f"bench-simulated-users-{RUN}-"))
os.environ["ELASTICSEARCH_INDEX_PREFIX"] = f"bench-{RUN}"
os.environ["CELERY_KEY_PREFIX"] = f"bench-{RUN}:"
os.environ["DATABASE_URL"] = f"sqlite:///{TMP / 'bench.sqlite3'}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["SEARCH_RATE_LIMIT_ENABLED"] = "false"
os.environ["AUTO_RERANKER_MIN_DOCUMENTS"] = "0"  # the bench trains explicitly
os.environ.setdefault("RERANKER_PRECISION", "float32")

SCIFACT = ROOT.parent / "shared" / "datasets" / "scifact"
RELEVANT_CLICK, OTHER_CLICK, DECAY = 0.9, 0.03, 0.75


def cpu_line() -> str:
    info = Path("/proc/cpuinfo").read_text().splitlines()
    name = next((l.split(":", 1)[1].strip() for l in info if l.startswith("model name")), "?")
    flags = set(next((l.split(":", 1)[1].split() for l in info if l.startswith("flags")), []))
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    return f"{name}, {os.cpu_count()} cores, flags: {' '.join(shown) or 'none of avx2/avx512/amx'}"


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        for row in csv.reader(handle, delimiter="\t"):
            if row and row[0] != "query-id":
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels


def write_beir(directory: Path, queries: dict[str, str], qrels: dict[str, dict[str, int]]) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": queries[q]}) + "\n" for q in qrels))
    (directory / "qrels.tsv").write_text("".join(f"{q}\t{d}\t{g}\n" for q, docs in qrels.items() for d, g in docs.items()))
    return directory / "queries.jsonl", directory / "qrels.tsv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=0, help="first N documents besides the judged ones (0: all)")
    parser.add_argument("--searches", type=int, default=2000)
    parser.add_argument("--dev-queries", type=int, default=0, help="use only the first N dev queries (0: all; a smoke run)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--skip-training", action="store_true", help="stop after the implicit judgments")
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import CommandError, call_command
    from django.test import Client

    from analytics.click_judgments import derive_implicit_judgments
    from indexer.models import Collection, Document
    from indexer.pipeline import index_documents
    from indexer.store import alias_name, get_store
    from relevance.collection_training import RECIPES
    from relevance.models import ImplicitJudgment

    print(cpu_line())
    print("float32 (RERANKER_PRECISION); other agents may be loading the same CPU.")
    call_command("migrate", verbosity=0)
    queries = {json.loads(l)["_id"]: json.loads(l)["text"] for l in (SCIFACT / "queries.jsonl").read_text().splitlines()}
    dev = read_qrels(SCIFACT / "qrels" / "dev.tsv")
    if args.dev_queries:
        dev = dict(list(dev.items())[: args.dev_queries])
    judged_docs = {d for docs in dev.values() for d in docs}
    rows = [json.loads(l) for l in (SCIFACT / "corpus.jsonl").read_text().splitlines()]
    kept = [r for i, r in enumerate(rows) if not args.documents or i < args.documents or r["_id"] in judged_docs]
    collection = Collection.objects.create(name="SciFact", slug="scifact", visibility=Collection.Visibility.PUBLIC)
    Document.objects.bulk_create([Document(collection=collection, external_id=r["_id"], title=r.get("title", ""), text=r["text"],
                                           content_hash=Document.compute_hash(r.get("title", ""), r["text"], {})) for r in kept])
    started = time.perf_counter()
    index_documents(list(Document.objects.values_list("pk", flat=True)))
    store = get_store()
    store.client.indices.refresh(index=alias_name("scifact"))
    print(f"{len(kept)} documents indexed in {time.perf_counter() - started:.0f} s")

    try:
        ranked = sorted(dev, key=lambda q: hashlib.sha256(f"{args.seed}:{q}".encode()).hexdigest())
        click_half, heldout_half = ranked[: len(ranked) // 2], ranked[len(ranked) // 2:]
        rng = random.Random(args.seed)
        client = Client()
        clicks = 0
        started = time.perf_counter()
        for number in range(args.searches):
            qid = rng.choice(click_half)
            answer = client.get("/api/search", {"q": queries[qid], "mode": "hybrid", "rerank": "off", "k": 10},
                                HTTP_X_SEARCH_SESSION=f"user-{number % 300}").json()
            for result in answer["results"]:
                relevant = dev[qid].get(result["external_id"], 0) > 0
                chance = (RELEVANT_CLICK if relevant else OTHER_CLICK) * DECAY ** (result["rank"] - 1)
                if rng.random() < chance:
                    response = client.post("/api/clicks", {"search_id": answer["search_id"], "rank": result["rank"]},
                                           content_type="application/json")
                    assert response.status_code == 201, response.content
                    clicks += 1
        print(f"{args.searches} searches of {len(click_half)} click-half dev queries, {clicks} clicks, "
              f"{time.perf_counter() - started:.0f} s")
        derivation = derive_implicit_judgments()
        print(derivation.summary())
        print("examination by rank: " + ", ".join(f"{r}: {p:.2f}" for r, p in derivation.propensity.items()))
        by_text = {queries[q]: q for q in click_half}
        table = {grade: [0, 0] for grade in range(3)}  # grade -> [relevant in the dev qrels, not]
        for text, external_id, grade in ImplicitJudgment.objects.values_list("query", "document__external_id", "grade"):
            table[grade][0 if dev[by_text[text]].get(external_id, 0) > 0 else 1] += 1
        print("implicit grade: judged relevant / not in the dev qrels: " + ", ".join(
            f"{grade}: {rel} / {other}" for grade, (rel, other) in table.items()))
        if args.skip_training:
            return
        heldout_files = write_beir(TMP / "heldout", queries, {q: dev[q] for q in heldout_half})
        recipe = RECIPES["cpu"]
        models = {}
        # clicks + pseudo is what the product trains when judgments grow (relevance/auto_reranker.py:
        # the recipe, its title pseudo-queries and --judgments both; no staff judgments here).
        trainings = (("pseudo-only", {"pseudo_only": True}), ("clicks alone", {"judgments": "implicit", "pseudo_queries": 0}),
                     ("clicks + pseudo", {"judgments": "both"}))
        for name, extra in trainings:
            out = io.StringIO()
            started = time.perf_counter()
            before = set((TMP / "models").glob("scifact-reranker-*"))
            try:
                call_command("train_reranker", "scifact", no_install=True, output=str(TMP / "models"), stdout=out,
                             **{**recipe, **extra})
                verdict = "beats the first stage on its held-out queries"
            except CommandError as exc:  # refused by the install rule: the model is kept, and measured all the same
                verdict = str(exc)
            made = sorted(set((TMP / "models").glob("scifact-reranker-*")) - before)
            if not made:
                print(f"{name}: no model ({verdict})")
                continue
            directory = made[-1]
            models[name] = str(directory)
            print(f"{name}: trained in {time.perf_counter() - started:.0f} s, {directory.name}: {verdict}")
        for name, directory in [("first stage", None), *models.items()]:
            out = io.StringIO()
            options = dict(queries=str(heldout_files[0]), qrels=str(heldout_files[1]), modes="hybrid", stdout=out,
                           output=str(TMP / "evaluations" / name.replace(" ", "-")))
            if directory:
                options.update(rerank=True, rerank_top="50", reranker_model=directory)
            call_command("evaluate", "scifact", **options)
            print(f"--- {name} on {len(heldout_half)} held-out dev queries\n{out.getvalue()}")
    finally:
        store.drop_indices([f"{os.environ['ELASTICSEARCH_INDEX_PREFIX']}*"])


if __name__ == "__main__":
    main()
