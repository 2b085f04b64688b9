"""The hybrid mode's fusion rule through the real stack: the rule a collection gets, what staff
see of it in the API's answer, that the rule orders the results, and `manage.py choose_fusion`
on judged queries (search/hybrid_fusion.py, search/retrieval.py, relevance/fusion_choice.py)."""
from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from indexer.lookups import serving_model
from indexer.models import Collection
from search.hybrid_fusion import LANGUAGE_DEFAULTS
from tests.support.searching import SCIENCE, add_documents, drop_collections, index_now

pytestmark = pytest.mark.django_db
QUERY = "telomerase activity of stem cells"


@pytest.fixture(scope="module")
def corpus(es, django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        collection = Collection.objects.create(name="Fusion sci", slug="f-sci", chunk_size=48, chunk_overlap=8,
                                               visibility=Collection.Visibility.PUBLIC)
        add_documents(collection, [(f"sci{i}", title, text, {}) for i, (title, text) in enumerate(SCIENCE)])
        index_now(es, collection)
        yield collection
        drop_collections(es, collection)


@pytest.fixture
def staff_api(client, django_user_model, settings, corpus):
    settings.SEARCH_HYBRID_FUSION = ""
    client.force_login(django_user_model.objects.create_user("fusion-staff", is_staff=True))

    def get(**params):
        response = client.get("/api/search", {"collection": corpus.slug, "rerank": "off", "group": "off", "k": 50,
                                              **params})
        assert response.status_code == 200, response.content
        return response.json()

    return get


def record(collection: Collection, rule: dict, model: str) -> None:
    Collection.objects.filter(pk=collection.pk).update(hybrid_fusion={"rule": rule, "model": model})


def test_staff_see_the_rule_and_strangers_do_not(staff_api, client, corpus):
    body = staff_api(q=QUERY, mode="hybrid")
    assert body["hybrid_fusion"] == {**LANGUAGE_DEFAULTS["en"].to_dict(), "source": "language default"}
    assert body["results"]
    client.logout()
    anonymous = client.get("/api/search", {"q": QUERY, "mode": "hybrid", "collection": corpus.slug}).json()
    assert "hybrid_fusion" not in anonymous and anonymous["results"]


def test_the_recorded_rule_orders_the_hybrid_list(staff_api, corpus):
    """A rule with all the weight on one list gives that list's order; recorded for other vectors
    than the live index's, it is not used."""
    model = serving_model(corpus)
    semantic = [r["external_id"] + f"/{r['chunk']}" for r in staff_api(q=QUERY, mode="semantic")["results"]]
    keyword = [r["external_id"] + f"/{r['chunk']}" for r in staff_api(q=QUERY, mode="keyword")["results"]]
    assert semantic[:5] != keyword[:5]
    try:
        record(corpus, {"method": "rrf", "weight": 1.0, "k": 60}, model)
        body = staff_api(q=QUERY, mode="hybrid")
        assert body["hybrid_fusion"] == {"method": "rrf", "weight": 1.0, "k": 60, "source": "collection"}
        hybrid = [r["external_id"] + f"/{r['chunk']}" for r in body["results"]]
        assert hybrid[:len(semantic)] == semantic
        record(corpus, {"method": "rrf", "weight": 0.0, "k": 60}, model)
        hybrid = [r["external_id"] + f"/{r['chunk']}" for r in staff_api(q=QUERY, mode="hybrid")["results"]]
        assert hybrid[:len(keyword)] == keyword
        # Min-max with the weight on the semantic list: its order, its best hit scored 1.
        record(corpus, {"method": "minmax", "weight": 1.0}, model)
        body = staff_api(q=QUERY, mode="hybrid")
        assert [r["external_id"] + f"/{r['chunk']}" for r in body["results"]][:len(semantic)] == semantic
        assert body["results"][0]["scores"]["first_stage"] == 1.0
        record(corpus, {"method": "minmax", "weight": 0.0}, "some-other-model")
        assert staff_api(q=QUERY, mode="hybrid")["hybrid_fusion"]["source"] == "language default"
    finally:
        Collection.objects.filter(pk=corpus.pk).update(hybrid_fusion={})


def judged_files(tmp_path, n_per_document: int = 3):
    """Queries made from each document's title and sentences, each judging its own document."""
    queries, qrels = [], ["query-id\tcorpus-id\tscore"]
    for i, (title, text) in enumerate(SCIENCE):
        sentences = [s.strip() for s in text.split(".") if s.strip()]
        for j, query in enumerate([title, *sentences, f"research on {title.lower()}"][:n_per_document]):
            queries.append(json.dumps({"_id": f"q{i}-{j}", "text": query}))
            qrels.append(f"q{i}-{j}\tsci{i}\t1")
    (tmp_path / "queries.jsonl").write_text("\n".join(queries) + "\n")
    (tmp_path / "qrels.tsv").write_text("\n".join(qrels) + "\n")
    return str(tmp_path / "queries.jsonl"), str(tmp_path / "qrels.tsv"), len(queries)


def test_choose_fusion_on_judged_queries(staff_api, corpus, tmp_path):
    queries, qrels, n = judged_files(tmp_path)
    assert n >= 20
    out = StringIO()
    call_command("choose_fusion", corpus.slug, "--queries", queries, "--qrels", qrels, "--dry-run", stdout=out)
    assert f"{n} judged queries" in out.getvalue() and "cross-validated" in out.getvalue()
    corpus.refresh_from_db()
    assert corpus.hybrid_fusion == {}, "--dry-run records nothing"
    try:
        out = StringIO()
        call_command("choose_fusion", corpus.slug, "--queries", queries, "--qrels", qrels, stdout=out)
        corpus.refresh_from_db()
        source = staff_api(q=QUERY, mode="hybrid")["hybrid_fusion"]["source"]
        if "recorded: the hybrid mode now uses it" in out.getvalue():
            assert corpus.hybrid_fusion["model"] == serving_model(corpus) and corpus.hybrid_fusion["queries"] == n
            assert corpus.hybrid_fusion["cross_validated_ndcg"] > corpus.hybrid_fusion["default_ndcg"]
            assert source == "collection"
        else:
            assert "not recorded" in out.getvalue() and corpus.hybrid_fusion == {} and source == "language default"
        call_command("choose_fusion", corpus.slug, "--clear", stdout=StringIO())
        corpus.refresh_from_db()
        assert corpus.hybrid_fusion == {}
    finally:
        Collection.objects.filter(pk=corpus.pk).update(hybrid_fusion={})
    with pytest.raises(CommandError, match="needs at least 20"):
        few_queries, few_qrels, _ = judged_files(tmp_path, n_per_document=1)
        call_command("choose_fusion", corpus.slug, "--queries", few_queries, "--qrels", few_qrels)
    with pytest.raises(CommandError, match="no collection with slug 'nope'"):
        call_command("choose_fusion", "nope")
