"""Reranker training through the real search: train_reranker mines its queries from the indexed
collection (Elasticsearch), trains, and evaluate scores the result (the training itself without
services: tests/unit/test_training.py)."""
import json
import random

import pytest

from reranker.training import TrainingSettings, build_groups, score_pairs

TOY_QUERIES = {  # query → external ids judged relevant (grade 1); "s1" judged not relevant for the first
    "telomerase in stem cells": ["s0"],
    "insulin and glucose uptake": ["s1"],
    "how do vaccine adjuvants work": ["s2"],
    "kinase inhibitor resistance in tumours": ["s3"],
    "gut microbiome short chain fatty acids": ["s4"],
    "synapses and memory in the hippocampus": ["s5"],
}


@pytest.mark.django_db
def test_commands_mine_through_the_search_train_and_evaluate(es, tmp_path, capsys):
    from django.core.management import CommandError, call_command

    from indexer.models import Collection, Document
    from relevance.collection_training import BODY, mine
    from relevance.models import Judgment
    from tests.support.searching import SCIENCE, add_documents, drop_collections, index_now

    collection = Collection.objects.create(name="Relevance toy", slug="relevance-toy")
    add_documents(collection, [(f"s{i}", title, text, {}) for i, (title, text) in enumerate(SCIENCE)])
    index_now(es, collection)
    try:
        docs = {d.external_id: d for d in Document.objects.filter(collection=collection)}
        for query, relevant in TOY_QUERIES.items():
            for ext in relevant:
                Judgment.objects.create(collection=collection, query=query, document=docs[ext], grade=1)
        Judgment.objects.create(collection=collection, query="telomerase in stem cells", document=docs["s1"], grade=0)

        data = mine(collection, "hybrid", 20, pseudo_queries=3, seed=1, stdout=type("Out", (), {"write": print}))
        assert len(data.queries) == len(TOY_QUERIES) and len(data.pseudo_queries) == 3
        for query in data.queries:
            # Candidates are the search's documents, best first: the real first stage ran.
            assert query.candidates and set(query.candidates) <= set(docs)
            assert all(data.documents[d].startswith(docs[d].title) for d in query.candidates)
            # Every mode's candidates, each document as the chunk that query's search sends.
            assert set(query.candidates_by_mode) == {"keyword", "semantic", "hybrid"}
            assert query.candidates_by_mode["hybrid"] == query.candidates and data.mode == "hybrid"
            for mode, keys in query.passages_by_mode.items():
                assert len(keys) == len(query.candidates_by_mode[mode])
                for doc, key in zip(query.candidates_by_mode[mode], keys):
                    assert key.startswith(f"chunk:{doc}/") and data.documents[key].startswith(docs[doc].title)
        for query in data.pseudo_queries:
            (positive,) = query.positives
            assert positive.startswith(BODY) and query.query == docs[positive[len(BODY):]].title
            assert all(docs[d[len(BODY):]].title not in data.documents[d] for d in query.candidates)
        rng = random.Random(3)
        for query_text, group in build_groups(data.queries + data.pseudo_queries,
                                              TrainingSettings(negatives=3, negatives_from_top=10),
                                              sorted(data.documents), rng):
            judged = next(q.judged for q in data.queries + data.pseudo_queries if q.query == query_text)
            assert not [d for d in group[1:] if judged.get(d, 0) > 0]

        out = tmp_path / "models"
        args = dict(max_steps=3, epochs=1, max_length=64, negatives=3, heldout=0.34, rerank_top=5, device="cpu",
                    output=str(out), pseudo_queries=2, threads=1)
        try:
            call_command("train_reranker", "relevance-toy", **args)
            refused = None
        except CommandError as exc:
            refused = str(exc)
        (model_dir,) = out.iterdir()
        report = json.loads((model_dir / "training.json").read_text())
        # The decision is the search's with this model: reranker + its fusion, in the mined mode.
        assert report["heldout"]["mode"] == "hybrid"
        assert report["heldout"]["final"] == report["heldout"]["modes"]["hybrid"]["final"]
        beats = report["heldout"]["final"]["ndcg@10"] > report["heldout"]["first_stage"]["ndcg@10"]
        collection.refresh_from_db()
        if beats:  # installed as the collection's reranker
            assert refused is None and collection.reranker_model == str(model_dir)
        else:      # refused with a clear message, and the collection keeps its reranker
            assert refused.startswith("NOT INSTALLED") and collection.reranker_model == ""
        out_text = capsys.readouterr().out
        assert "constant predictor" in out_text
        # Trained on a CPU: served by OpenVINO, whose int8 model was calibrated on training pairs
        # and judged on the held-out queries.
        from reranker.openvino_export import read_export

        state = read_export(model_dir)
        assert state.has_int8 and state.manifest["calibration_pairs"] > 0
        assert state.manifest["int8"]["queries"] == report["heldout"]["queries"]
        assert "int8 check: held-out nDCG@10 int8" in out_text

        # Any directory: exported, int8 calibrated on title pseudo-queries and judged on the
        # collection's judged queries.
        call_command("export_reranker", str(model_dir), judge_on="relevance-toy", force=True)
        printed = capsys.readouterr().out
        assert "OpenVINO export in" in printed and ("int8 allowed" in printed or "int8 refused" in printed)
        state = read_export(model_dir)
        assert state.has_int8 and state.manifest["int8"]["queries"] == len(TOY_QUERIES)
        with pytest.raises(CommandError, match="no collection"):
            call_command("export_reranker", str(model_dir), judge_on="no-such-collection")

        # A model trained elsewhere is installed by the same rule, read from its training.json.
        Collection.objects.filter(pk=collection.pk).update(reranker_model="")
        if beats:
            call_command("train_reranker", "relevance-toy", install_trained=str(model_dir))
        else:
            with pytest.raises(CommandError, match="NOT INSTALLED"):
                call_command("train_reranker", "relevance-toy", install_trained=str(model_dir))
        collection.refresh_from_db()
        assert collection.reranker_model == (str(model_dir.resolve()) if beats else "")
        report["heldout"]["final"]["ndcg@10"] = report["heldout"]["first_stage"]["ndcg@10"]  # a tie is not better
        (model_dir / "training.json").write_text(json.dumps(report))
        with pytest.raises(CommandError, match="NOT INSTALLED"):
            call_command("train_reranker", "relevance-toy", install_trained=str(model_dir))

        call_command("evaluate", "relevance-toy", modes="keyword,hybrid", rerank=True, rerank_top="5",
                     reranker_model=str(model_dir), k=3, recall_k=5, output=str(tmp_path / "eval"))
        table = capsys.readouterr().out
        assert "keyword" in table and "rerank top-5" in table and "ndcg@3" in table
        metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
        assert metrics["queries"] == len(TOY_QUERIES)
        assert set(metrics["results"]) == {"keyword", "hybrid"}
        from reranker.fusion import load_fusion

        # With a fusion (fusion.json) the model's logits alone are shown too.
        logits_row = {"logits top-5"} if load_fusion(model_dir).for_mode("hybrid").weight > 0 else set()
        assert set(metrics["results"]["hybrid"]) == {"first stage", "rerank top-5"} | logits_row
        assert (tmp_path / "eval" / "ndcg.png").stat().st_size > 1000

        # Pairs exported, scored elsewhere (here: by the same model), read back: the same table,
        # nothing scored again.
        call_command("evaluate", "relevance-toy", modes="keyword,hybrid", rerank=True, rerank_top="5", k=3,
                     recall_k=5, export_pairs=str(tmp_path / "pairs.json.gz"))
        import gzip

        exported = json.load(gzip.open(tmp_path / "pairs.json.gz", "rt"))
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(str(model_dir), device="cpu")
        exported["logits"] = score_pairs(model, [(exported["queries"][q], exported["passages"][p])
                                                 for q, p in exported["pairs"]]).tolist()
        json.dump(exported, gzip.open(tmp_path / "scores.json.gz", "wt"))
        capsys.readouterr()
        call_command("evaluate", "relevance-toy", modes="keyword,hybrid", rerank=True, rerank_top="5",
                     reranker_model=str(model_dir), k=3, recall_k=5, output=str(tmp_path / "eval2"),
                     pair_scores=str(tmp_path / "scores.json.gz"))
        again = json.loads((tmp_path / "eval2" / "metrics.json").read_text())
        assert again["pairs_scored_here"] == 0 and again["pairs_from_file"] == len(exported["pairs"])
        for mode in ("keyword", "hybrid"):
            for run in ("first stage", "rerank top-5"):
                assert again["results"][mode][run]["mean"] == pytest.approx(metrics["results"][mode][run]["mean"])

        with pytest.raises(CommandError, match="unknown mode"):
            call_command("evaluate", "relevance-toy", modes="fuzzy")
        with pytest.raises(CommandError, match="give both --queries and --qrels"):
            call_command("evaluate", "relevance-toy", queries="x.jsonl")
    finally:
        drop_collections(es, collection)


@pytest.mark.django_db
def test_mining_a_collection_the_search_cannot_find_fails_loudly(es):
    """Judged queries over a collection with no index: every first stage is empty, so training
    would only see random negatives. Mining says so instead of training on that."""
    from django.core.management import CommandError

    from indexer.models import Collection, Document
    from relevance.collection_training import mine
    from relevance.models import Judgment
    from tests.support.searching import SCIENCE, add_documents

    collection = Collection.objects.create(name="Never indexed", slug="never-indexed")
    add_documents(collection, [(f"s{i}", title, text, {}) for i, (title, text) in enumerate(SCIENCE)])
    document = Document.objects.filter(collection=collection).first()
    Judgment.objects.create(collection=collection, query="telomerase in stem cells", document=document, grade=1)
    with pytest.raises(CommandError, match="returned no candidates for any query of 'never-indexed'"):
        mine(collection, "hybrid", 20, pseudo_queries=2, seed=1, stdout=type("Out", (), {"write": print}))
