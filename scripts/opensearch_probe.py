#!/usr/bin/env python3
"""Prove, against a running OpenSearch node, each engine feature the project needs.

    python3 scripts/services.py start opensearch
    .venv/bin/python scripts/opensearch_probe.py [--url http://127.0.0.1:9250] [--docs 2000]

Prints one line per check (`ok` or `FAIL` and what was seen) and exits 1 if any failed. It
works in indices named `searchsite-probe-*`, deleted at the end (also after a failure).

What it checks, mirroring the Elasticsearch mapping of indexer/store.py:
  - the node's identity as /healthz would read it (`info()["version"]`) and the k-NN plugin;
  - the `whitespace` and `standard` analyzers and a per-field BM25 similarity (k1 0.9, b 0.4),
    read back from an `explain`;
  - a `knn_vector` field (HNSW, engine `lucene`, cosinesimil and innerproduct), keyword fields,
    `flat_object` metadata (OpenSearch's counterpart of Elasticsearch's `flattened`), and terms
    fields left out of `_source`;
  - bulk indexing through `opensearchpy.helpers.bulk`, refresh, `_count`;
  - a k-NN query with an efficient filter inside a bool with access filters;
  - BM25 `multi_match`, `_msearch`, an atomic alias swap, delete by id and by query;
  - recall@10 of the k-NN query against exact cosine on random unit vectors.

Only the `lucene` engine is used: the k-NN plugin Maven Central serves has no native libraries,
and indexing into a faiss or nmslib field kills the node (UnsatisfiedLinkError, a fatal error).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from opensearchpy import OpenSearch, helpers
from opensearchpy.exceptions import ConnectionError as OSConnectionError

DIMS = 384
PREFIX = "searchsite-probe"
VOCABULARY = [f"w{i}" for i in range(300)]
GROUPS = ("public", "staff", "secret")

failures: list[str] = []


def check(name: str, passed: bool, detail: str) -> bool:
    print(f"{'ok  ' if passed else 'FAIL'} {name}: {detail}", flush=True)
    if not passed:
        failures.append(name)
    return passed


def index_body(space_type: str) -> dict:
    """The project's chunk mapping (indexer/store.py) in OpenSearch's words."""
    terms_field = {"type": "text", "analyzer": "whitespace", "index_options": "freqs", "similarity": "terms_bm25"}
    return {
        "settings": {
            "number_of_shards": 1, "number_of_replicas": 0,
            # k-NN fields need it on the index.
            "index.knn": True,
            "similarity": {"terms_bm25": {"type": "BM25", "k1": 0.9, "b": 0.4}},
        },
        "mappings": {
            "dynamic": "strict",
            "_source": {"excludes": ["title_terms", "text_terms"]},
            "properties": {
                "collection": {"type": "keyword"},
                "group": {"type": "keyword"},
                "document_id": {"type": "long"},
                "external_id": {"type": "keyword"},
                "title": {"type": "text", "analyzer": "standard"},
                "text": {"type": "text", "analyzer": "standard"},
                "title_terms": dict(terms_field),
                "text_terms": dict(terms_field),
                "chunk": {"type": "integer"},
                "content_hash": {"type": "keyword"},
                "metadata": {"type": "flat_object"},
                "embedding": {
                    "type": "knn_vector",
                    "dimension": DIMS,
                    "method": {"name": "hnsw", "engine": "lucene", "space_type": space_type,
                               "parameters": {"m": 16, "ef_construction": 100}},
                },
            },
        },
    }


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def make_docs(rng: np.random.Generator, n: int) -> tuple[list[dict], np.ndarray]:
    vectors = unit(rng.standard_normal((n, DIMS)).astype(np.float32))
    docs = []
    for i in range(n):
        words = rng.choice(VOCABULARY, size=int(rng.integers(5, 40)))
        docs.append({
            "_id": f"d{i}",
            "collection": "c1" if i % 4 else "c2",
            "group": GROUPS[i % 3],
            "document_id": i,
            "external_id": f"ext-{i}",
            "title": f"Document {i}",
            "text": " ".join(words),
            "title_terms": " ".join(words[:3]),
            "text_terms": " ".join(words),
            "chunk": 0,
            "content_hash": f"h{i}",
            "metadata": {"lang": "en" if i % 2 else "fr"},
            "embedding": vectors[i].tolist(),
        })
    return docs, vectors


def recall_at_10(client: OpenSearch, index: str, vectors: np.ndarray, queries: np.ndarray,
                 allowed: np.ndarray | None = None, knn_filter: dict | None = None,
                 ef_search: int | None = None) -> float:
    """Mean overlap of the k-NN top 10 with the exact cosine top 10 (of the allowed docs)."""
    found = 0
    for q in queries:
        sims = vectors @ q
        if allowed is not None:
            sims = np.where(allowed, sims, -np.inf)
        exact = {f"d{i}" for i in np.argsort(-sims)[:10]}
        clause = {"vector": q.tolist(), "k": 10}
        if knn_filter is not None:
            clause["filter"] = knn_filter
        if ef_search is not None:
            clause["method_parameters"] = {"ef_search": ef_search}
        hits = client.search(index=index, body={"size": 10, "_source": False,
                                                "query": {"knn": {"embedding": clause}}})["hits"]["hits"]
        found += len(exact & {h["_id"] for h in hits})
    return found / (10 * len(queries))


def run(client: OpenSearch, n_docs: int, n_queries: int) -> None:
    # ------------------------------------------------------------ node
    info = client.info()
    version = info["version"]
    check("identity (/healthz reads info()['version'])", version.get("distribution") == "opensearch",
          f"distribution={version.get('distribution')!r} number={version['number']!r} lucene={version['lucene_version']}")
    plugins = {p["component"]: p["version"] for p in client.cat.plugins(format="json")}
    check("k-NN plugin", "opensearch-knn" in plugins, f"plugins={plugins}")

    # ------------------------------------------------------------ analyzers
    tokens = [t["token"] for t in client.indices.analyze(body={"analyzer": "whitespace", "text": "Foo-bar  baz"})["tokens"]]
    check("whitespace analyzer", tokens == ["Foo-bar", "baz"], f"'Foo-bar  baz' -> {tokens}")
    tokens = [t["token"] for t in client.indices.analyze(body={"analyzer": "standard", "text": "Foo-bar  baz"})["tokens"]]
    check("standard analyzer", tokens == ["foo", "bar", "baz"], f"'Foo-bar  baz' -> {tokens}")

    # ------------------------------------------------------------ index and mapping
    stamp = time.strftime("%Y%m%d%H%M%S")
    index_a, index_b, index_ip = f"{PREFIX}-{stamp}-a", f"{PREFIX}-{stamp}-b", f"{PREFIX}-{stamp}-ip"
    alias = f"{PREFIX}-{stamp}"
    client.indices.create(index=index_a, body=index_body("cosinesimil"))
    mapping = client.indices.get_mapping(index=index_a)[index_a]["mappings"]
    emb = mapping["properties"]["embedding"]
    check("knn_vector mapping (cosinesimil)", emb.get("type") == "knn_vector" and emb.get("dimension") == DIMS
          and emb["method"]["engine"] == "lucene", f"embedding={emb}")
    tt = mapping["properties"]["text_terms"]
    check("terms field mapping", tt.get("analyzer") == "whitespace" and tt.get("similarity") == "terms_bm25",
          f"text_terms={tt}")
    sim = client.indices.get_settings(index=index_a)[index_a]["settings"]["index"]["similarity"]
    check("custom BM25 similarity setting", sim == {"terms_bm25": {"type": "BM25", "k1": "0.9", "b": "0.4"}},
          f"similarity={sim}")

    # ------------------------------------------------------------ bulk, refresh, count
    rng = np.random.default_rng(13)
    docs, vectors = make_docs(rng, n_docs)
    t0 = time.time()
    ok, errors = helpers.bulk(client, docs, index=index_a, chunk_size=500, raise_on_error=False,
                             request_timeout=120)
    check("helpers.bulk", ok == n_docs and not errors,
          f"{ok} indexed, {len(errors)} errors in {time.time() - t0:.1f}s" + (f"; first: {errors[0]}" if errors else ""))
    client.indices.refresh(index=index_a)
    count = client.count(index=index_a)["count"]
    check("refresh + _count", count == n_docs, f"count={count}")
    got = client.get(index=index_a, id="d1")["_source"]
    check("terms fields left out of _source", "text_terms" not in got and "title" in got,
          f"_source keys={sorted(got)}")
    n_fr = client.count(index=index_a, body={"query": {"term": {"metadata.lang": "fr"}}})["count"]
    check("flat_object metadata filter", n_fr == (n_docs + 1) // 2, f"metadata.lang=fr: {n_fr} docs")

    # ------------------------------------------------------------ k-NN with an efficient filter
    query = unit(rng.standard_normal((1, DIMS)).astype(np.float32))[0]
    access = [{"term": {"collection": "c1"}}, {"terms": {"group": ["public", "staff"]}}]
    body = {"size": 10, "_source": ["collection", "group"],
            "query": {"bool": {
                "must": [{"knn": {"embedding": {"vector": query.tolist(), "k": 10,
                                                "filter": {"bool": {"filter": access}}}}}],
                "filter": access}}}
    hits = client.search(index=index_a, body=body)["hits"]["hits"]
    allowed = np.array([d["collection"] == "c1" and d["group"] in ("public", "staff") for d in docs])
    sims = np.where(allowed, vectors @ query, -np.inf)
    exact = [f"d{i}" for i in np.argsort(-sims)[:10]]
    leaked = [h["_id"] for h in hits if h["_source"]["collection"] != "c1" or h["_source"]["group"] == "secret"]
    check("k-NN + efficient filter in bool with access filters", len(hits) == 10 and not leaked,
          f"{len(hits)} hits, {len(leaked)} outside the access filter, "
          f"{len(set(exact) & {h['_id'] for h in hits})}/10 of the exact filtered top 10")
    top = hits[0]
    cos = float(vectors[int(top["_id"][1:])] @ query)
    check("cosinesimil score = (1 + cos) / 2", abs(top["_score"] - (1 + cos) / 2) < 1e-3,
          f"_score={top['_score']:.5f} cos={cos:.5f}")

    # ------------------------------------------------------------ BM25
    words = docs[7]["text_terms"].split()[:3]
    bm25 = {"size": 5, "query": {"bool": {
        "must": [{"multi_match": {"query": " ".join(words), "fields": ["title_terms^2", "text_terms"]}}],
        "filter": access}}}
    hits = client.search(index=index_a, body=bm25)["hits"]["hits"]
    check("BM25 multi_match", len(hits) > 0, f"query {words}: {len(hits)} hits, top _score {hits[0]['_score']:.3f}"
          if hits else f"query {words}: no hits")
    explanation = client.explain(index=index_a, id=hits[0]["_id"],
                                 body={"query": {"match": {"text_terms": words[0]}}})
    params = {}

    def walk(node: dict) -> None:
        desc = node.get("description", "")
        if desc.startswith("k1,") or desc.startswith("b,"):
            params[desc.split(",")[0]] = node["value"]
        for child in node.get("details", []):
            walk(child)
    walk(explanation["explanation"])
    check("per-field BM25 k1/b in explain", params == {"k1": 0.9, "b": 0.4}, f"explain says {params}")

    # ------------------------------------------------------------ _msearch
    responses = client.msearch(body=[{"index": index_a}, body, {"index": index_a}, bm25])["responses"]
    check("_msearch (k-NN + BM25)", len(responses) == 2 and all("error" not in r for r in responses),
          f"hits per response: {[len(r.get('hits', {}).get('hits', [])) for r in responses]}"
          + "".join(f"; error: {r['error']}" for r in responses if "error" in r))

    # ------------------------------------------------------------ aliases: atomic swap
    client.indices.create(index=index_b, body=index_body("cosinesimil"))
    client.indices.update_aliases(body={"actions": [{"add": {"index": index_a, "alias": alias,
                                                             "is_write_index": True}}]})
    client.indices.update_aliases(body={"actions": [
        {"remove": {"index": index_a, "alias": alias}},
        {"add": {"index": index_b, "alias": alias, "is_write_index": True}}]})
    behind = sorted(client.indices.get_alias(name=alias))
    check("atomic alias swap (_aliases remove+add)", behind == [index_b], f"{alias} -> {behind}")
    client.index(index=alias, id="via-alias", body={**{k: v for k, v in docs[0].items() if k != "_id"}},
                 refresh=True)
    check("write through the alias", client.count(index=index_b)["count"] == 1, f"{index_b} count after one write")

    # ------------------------------------------------------------ deletes
    client.delete(index=index_a, id="d1", refresh=True)
    gone = not client.exists(index=index_a, id="d1")
    check("delete by id", gone and client.count(index=index_a)["count"] == n_docs - 1,
          f"count={client.count(index=index_a)['count']}")
    result = client.delete_by_query(index=index_a, body={"query": {"term": {"group": "secret"}}},
                                    refresh=True, conflicts="proceed")
    secret = sum(1 for i, d in enumerate(docs) if d["group"] == "secret" and i != 1)
    check("delete_by_query", result["deleted"] == secret and not result["failures"]
          and client.count(index=index_a, body={"query": {"term": {"group": "secret"}}})["count"] == 0,
          f"deleted={result['deleted']} (expected {secret})")

    # ------------------------------------------------------------ recall@10
    client.indices.delete(index=index_b)
    fresh_a = f"{PREFIX}-{stamp}-r"
    for name, space in ((fresh_a, "cosinesimil"), (index_ip, "innerproduct")):
        client.indices.create(index=name, body=index_body(space))
        helpers.bulk(client, docs, index=name, chunk_size=500, request_timeout=120)
        client.indices.refresh(index=name)
        # Searching one segment, as a built index after force-merge; a fresh index has several
        # small graphs, which changes recall.
        client.indices.forcemerge(index=name, max_num_segments=1, request_timeout=300)
        client.indices.refresh(index=name)
    queries = unit(rng.standard_normal((n_queries, DIMS)).astype(np.float32))
    for name, space in ((fresh_a, "cosinesimil"), (index_ip, "innerproduct")):
        r = recall_at_10(client, name, vectors, queries)
        check(f"recall@10 {space}, k=10 (ef_search default)", r >= 0.9,
              f"{r:.3f} over {n_queries} queries, {n_docs} docs, 1 segment")
        # The lucene engine searches ef_search candidates (default: the index setting
        # index.knn.algo_param.ef_search, 100), not k: a larger k alone changes nothing.
        r = recall_at_10(client, name, vectors, queries, ef_search=400)
        check(f"recall@10 {space}, ef_search=400", r >= 0.98, f"{r:.3f}")
    r = recall_at_10(client, fresh_a, vectors, queries, allowed=allowed,
                     knn_filter={"bool": {"filter": access}})
    check("recall@10 cosinesimil with efficient filter", r >= 0.9,
          f"{r:.3f} ({int(allowed.sum())} of {n_docs} docs allowed)")
    for name in (fresh_a, index_ip):
        client.indices.delete(index=name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:9250", help="OpenSearch URL (default %(default)s)")
    parser.add_argument("--docs", type=int, default=2000, help="random unit vectors to index (default %(default)s)")
    parser.add_argument("--queries", type=int, default=100, help="recall queries (default %(default)s)")
    args = parser.parse_args()
    if args.docs < 100 or args.queries < 1:
        parser.error("--docs must be at least 100 and --queries at least 1")
    client = OpenSearch(args.url, timeout=30)
    try:
        client.info()
    except OSConnectionError as e:
        print(f"FAIL no OpenSearch answers at {args.url} ({e}); start it with "
              "`python3 scripts/services.py start opensearch`", file=sys.stderr)
        return 1
    try:
        run(client, args.docs, args.queries)
    except Exception as e:  # a check that could not even run is a failure, reported as such
        check("probe ran to the end", False, f"{type(e).__name__}: {e}")
    finally:
        leftovers = client.indices.get(index=f"{PREFIX}-*")
        if leftovers:
            client.indices.delete(index=",".join(leftovers))
    print(f"{'all checks passed' if not failures else f'{len(failures)} failed: ' + ', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
