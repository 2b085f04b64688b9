"""Judgments and runs moved from the reranker app to the relevance app: a database migrated before
the move keeps every row, its content types and their permissions after it."""
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("reranker", "0002_reranker_runs"), ("indexer", "0007_index_layout"), ("relevance", None)]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state([t for t in targets if t[1] is not None]).apps


@pytest.mark.django_db(transaction=True)
def test_rows_survive_the_move_to_the_relevance_app():
    old = migrate(BEFORE)
    Collection = old.get_model("indexer", "Collection")
    Document = old.get_model("indexer", "Document")
    Judgment = old.get_model("reranker", "Judgment")
    RerankerRun = old.get_model("reranker", "RerankerRun")
    ContentType = old.get_model("contenttypes", "ContentType")
    Permission = old.get_model("auth", "Permission")

    collection = Collection.objects.create(name="Papers", slug="papers")
    docs = [Document.objects.create(collection=collection, external_id=f"d{i}", title=f"T{i}", text=f"text {i}",
                                    content_hash=f"h{i}") for i in range(3)]
    for i, doc in enumerate(docs):
        Judgment.objects.create(collection=collection, query="what is it", query_id="q1", document=doc, grade=i,
                                source="import")
    run = RerankerRun.objects.create(collection=collection, kind="train", parameters={"epochs": 2}, status="done",
                                     log="line one\nline two", result={"installed": True})
    judgment_type = ContentType.objects.get_or_create(app_label="reranker", model="judgment")[0]
    Permission.objects.get_or_create(content_type=judgment_type, codename="change_judgment",
                                     defaults={"name": "Can change judgment"})

    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    from django.contrib.auth.models import Permission as NewPermission
    from django.contrib.contenttypes.models import ContentType as NewContentType

    from relevance.models import Judgment as NewJudgment
    from relevance.models import RerankerRun as NewRun

    assert NewJudgment._meta.db_table == "relevance_judgment"
    assert sorted(NewJudgment.objects.values_list("document__external_id", "grade", "query_id", "source")) == [
        ("d0", 0, "q1", "import"), ("d1", 1, "q1", "import"), ("d2", 2, "q1", "import")]
    moved = NewRun.objects.get()
    assert (moved.pk, moved.kind, moved.parameters, moved.log, moved.result) == (
        run.pk, "train", {"epochs": 2}, "line one\nline two", {"installed": True})
    NewContentType.objects.clear_cache()
    assert NewContentType.objects.get_for_model(NewJudgment).pk == judgment_type.pk
    assert NewPermission.objects.filter(content_type__app_label="relevance", codename="change_judgment").exists()
    assert not NewContentType.objects.filter(app_label="reranker", model="judgment").exists()
    # The unique rule came along with the table.
    from django.db import IntegrityError, transaction
    with pytest.raises(IntegrityError), transaction.atomic():
        NewJudgment.objects.create(collection_id=collection.pk, query="what is it", document_id=docs[0].pk, grade=1)
