"""Choose the hybrid fusion of semantic and keyword candidates on train queries (not a test).

Reads the candidate lists bench/first_stage.py wrote (one file per data set and model), fuses
them offline with every candidate rule, and prints nDCG@10 of each rule chosen on the train
queries, measured on the dev queries:

    .venv/bin/python bench/fusion_choice.py var/bench/first-stage/*.json

Rules: search/hybrid_fusion.py (the query path fuses with the same functions).

A set without train queries (the Chinese one) is chosen by two-fold cross-validation on dev: the
rule chosen on one half is measured on the other, and the two halves' figures are averaged.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")

DATASETS = ROOT.parent / "shared" / "datasets"


def fuse(lists: dict, rule) -> list[str]:
    """Document ids in the order the fused chunks put them (each document at its best chunk)."""
    from search.hybrid_fusion import fused_scores

    semantic = [((doc, chunk), score) for doc, chunk, score in lists["semantic"]]
    keyword = [((doc, chunk), score) for doc, chunk, score in lists["keyword"]]
    fused = fused_scores(semantic, keyword, rule)
    seen, documents = set(), []
    for doc, _ in sorted(fused, key=lambda key: (-fused[key], key)):
        if doc not in seen:
            seen.add(doc)
            documents.append(doc)
    return documents


def score(split_lists: dict, qrels: dict, rule, qids) -> float:
    from reranker.metrics import evaluate_run

    run = {qid: fuse(split_lists[qid], rule) for qid in qids}
    return evaluate_run(run, {q: qrels[q] for q in qids}, {"ndcg": 10})["mean"]["ndcg@10"]


def best(split_lists, qrels, qids):
    from search.hybrid_fusion import PLAIN_RRF, candidates

    scored = [(score(split_lists, qrels, rule, qids), rule) for rule in candidates()]
    return max(scored, key=lambda item: (round(item[0], 6), item[1] == PLAIN_RRF))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dumps", nargs="+", type=Path)
    args = parser.parse_args()
    import django

    django.setup()
    from relevance.fusion_choice import folds
    from relevance.judgments import read_qrels
    from search.hybrid_fusion import LANGUAGE_DEFAULTS, PLAIN_RRF, FusionRule

    plain = PLAIN_RRF
    print(f"{'set':12} {'model':22} {'semantic':>8} {'keyword':>8} {'rrf60':>7} {'chosen':>7}  rule (chosen on)")
    for path in args.dumps:
        dump = json.loads(path.read_text())
        folder = DATASETS / dump["set"]
        dev = dump["splits"]["dev"]
        dev_qrels = {q: r for q, r in read_qrels(folder / "qrels" / "dev.tsv").items() if q in dev}
        dev_ids = sorted(dev_qrels)
        sem = score(dev, dev_qrels, FusionRule("rrf", 1.0), dev_ids)
        kw = score(dev, dev_qrels, FusionRule("rrf", 0.0), dev_ids)
        rrf = score(dev, dev_qrels, plain, dev_ids)
        default = score(dev, dev_qrels, LANGUAGE_DEFAULTS[dump["language"]], dev_ids)
        if "train" in dump["splits"]:
            train = dump["splits"]["train"]
            train_qrels = {q: r for q, r in read_qrels(folder / "qrels" / "train.tsv").items() if q in train}
            _, rule = best(train, train_qrels, sorted(train_qrels))
            chosen, how = score(dev, dev_qrels, rule, dev_ids), f"train, {len(train_qrels)} queries"
            rules = [rule]
        else:
            a, b = folds(dev_ids)
            rule_a, rule_b = best(dev, dev_qrels, a)[1], best(dev, dev_qrels, b)[1]
            chosen = (score(dev, dev_qrels, rule_a, b) * len(b) + score(dev, dev_qrels, rule_b, a) * len(a)) / len(dev_ids)
            how, rules = "2-fold on dev", [rule_a, rule_b]
        print(f"{dump['set']:12} {dump['model'][:22]:22} {sem:8.4f} {kw:8.4f} {rrf:7.4f} {chosen:7.4f}  "
              f"{' / '.join(str(r) for r in rules)} ({how}); default {default:.4f}", flush=True)


if __name__ == "__main__":
    main()
