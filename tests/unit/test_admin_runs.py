"""Reranker runs from the admin without services: progress written into the record, the
command's options for a run, the forms, the pages and their permissions, the trained-reranker
list and the roll-back target. Runs done by a real worker: tests/integration/test_admin_runs.py."""
import json

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from indexer.models import Collection
from relevance.admin_runs import rollback_target, trained_rerankers
from relevance.models import RerankerRun
from relevance.run_progress import LOG_LINES_KEPT, RunProgress
from relevance.run_tasks import RunRefused, command_options, heldout_chart_results, start_run


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def recorder():
    writes = []
    clock = Clock()
    return RunProgress(lambda **fields: writes.append(fields), interval=1.0, clock=clock), writes, clock


def test_a_bar_writes_its_start_its_end_and_at_most_one_update_per_interval():
    reporter, writes, clock = recorder()
    items = []
    for item in reporter.progress(range(5), desc="hybrid", unit="query"):
        items.append(item)
        clock.now += 0.4
    assert items == [0, 1, 2, 3, 4]
    assert writes[0] == {"progress_done": 0, "progress_total": 5, "progress_text": "hybrid: 0/5 query"}
    assert writes[-1] == {"progress_done": 5, "progress_total": 5, "progress_text": "hybrid: 5/5 query"}
    # 5 updates 0.4 s apart: the start, the one update a second after it (the third), the close.
    assert [w["progress_done"] for w in writes] == [0, 3, 5]


def test_a_bar_without_length_and_with_postfix():
    reporter, writes, _ = recorder()
    bar = reporter.progress(total=10, desc="training", unit="step")
    bar.update(3)
    bar.set_postfix(loss="0.912", refresh=False)
    bar.close()
    assert writes[-1] == {"progress_done": 3, "progress_total": 10, "progress_text": "training: 3/10 step (loss=0.912)"}
    reporter.progress(iter("abc"), desc="mining", unit="query").close()
    assert writes[-1]["progress_total"] == 0 and writes[-1]["progress_text"] == "mining: 0 query"


def test_output_lines_are_kept_newest_last_and_trimmed():
    reporter, writes, _ = recorder()
    reporter.echo("first\nsecond")
    reporter.write("third")
    assert writes[-1] == {"log": "first\nsecond\nthird"}
    for i in range(LOG_LINES_KEPT + 5):
        reporter.echo(f"line {i}")
    lines = writes[-1]["log"].split("\n")
    assert len(lines) == LOG_LINES_KEPT and lines[-1] == f"line {LOG_LINES_KEPT + 4}"


def test_command_options_are_the_commands_defaults_plus_the_parameters():
    options = command_options("evaluate", "papers", {"modes": "keyword", "k": 5})
    assert options["collection"] == "papers" and options["modes"] == "keyword" and options["k"] == 5
    assert options["recall_k"] == 100 and options["rerank"] is False and options["rerank_top"] == "50,100"
    train = command_options("train", "papers", {})
    assert train["epochs"] >= 1 and train["mode"] == "hybrid" and train["install_trained"] is None
    with pytest.raises(RunRefused, match="unknown option.*fuzz"):
        command_options("evaluate", "papers", {"fuzz": 1})


def test_heldout_chart_results_shape():
    heldout = {"modes": {"hybrid": {"first_stage": {"ndcg@10": 0.5}, "reranked": {"ndcg@10": 0.6},
                                    "final": {"ndcg@10": 0.7}}}}
    assert heldout_chart_results(heldout) == {"hybrid": {"first stage": {"mean": {"ndcg@10": 0.5}},
                                                         "reranked": {"mean": {"ndcg@10": 0.6}},
                                                         "fused": {"mean": {"ndcg@10": 0.7}}}}


# --------------------------------------------------------------------------- pages


@pytest.fixture
def collection(db):
    return Collection.objects.create(name="Papers", slug="papers")


@pytest.mark.django_db
def test_evaluate_form_refuses_bad_input_and_queues_a_run(admin_client, collection, tmp_path,
                                                         django_capture_on_commit_callbacks):
    url = reverse("admin:relevance_rerankerrun_evaluate", args=[collection.pk])
    page = admin_client.get(url)
    assert page.status_code == 200 and b'name="modes"' in page.content and b"csrfmiddlewaretoken" in page.content
    change = admin_client.get(reverse("admin:indexer_collection_change", args=[collection.pk]))
    for name in ("evaluate", "train", "rerankers"):
        assert reverse(f"admin:relevance_rerankerrun_{name}", args=[collection.pk]).encode() in change.content

    base = {"modes": ["keyword", "hybrid"], "rerank_top": "50", "k": 10, "recall_k": 100}
    bad = admin_client.post(url, {**base, "queries": str(tmp_path / "q.jsonl")})
    assert bad.status_code == 200 and "Give both the queries and the qrels file" in bad.content.decode()
    bad = admin_client.post(url, {**base, "queries": str(tmp_path / "q.jsonl"), "qrels": str(tmp_path / "r.tsv")})
    assert "No such file on the server" in bad.content.decode()
    bad = admin_client.post(url, {**base, "rerank_top": "0"})
    assert "expected positive integers" in bad.content.decode()
    assert not RerankerRun.objects.exists()

    with django_capture_on_commit_callbacks() as callbacks:  # queued once committed: not sent here
        response = admin_client.post(url, {**base, "rerank": "on", "limit": 3})
    run = RerankerRun.objects.get()
    assert response.status_code == 302 and response.url == reverse("admin:relevance_rerankerrun_change", args=[run.pk])
    assert len(callbacks) == 1
    assert (run.kind, run.status, run.started_by.username) == ("evaluate", "queued", "admin")
    assert run.parameters == {"modes": "keyword,hybrid", "rerank": True, "rerank_top": "50", "k": 10,
                              "recall_k": 100, "limit": 3}

    page = admin_client.get(response.url)
    assert page.status_code == 200 and b"run-progress-bar" in page.content and b"fetch(" in page.content
    progress = admin_client.get(reverse("admin:relevance_rerankerrun_progress", args=[run.pk])).json()
    assert progress["status"] == "queued" and progress["done"] == 0 and progress["total"] == 0
    assert progress["finished"] is False


@pytest.mark.django_db
def test_train_form_starts_from_the_commands_defaults(admin_client, collection, django_capture_on_commit_callbacks):
    url = reverse("admin:relevance_rerankerrun_train", args=[collection.pk])
    page = admin_client.get(url)
    defaults = command_options("train", collection.slug, {})
    form = page.context["form"]
    assert form["epochs"].value() == defaults["epochs"] and form["base"].value() == defaults["base"]
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None and form[name].value() is not False}
    data.update(max_steps=3, heldout=1.5)
    assert "between 0 and 1" in admin_client.post(url, data).content.decode()
    data["heldout"] = 0.3
    with django_capture_on_commit_callbacks():
        response = admin_client.post(url, data)
    run = RerankerRun.objects.get()
    assert response.status_code == 302 and run.kind == "train"
    assert run.parameters["max_steps"] == 3 and run.parameters["heldout"] == 0.3
    assert run.parameters["no_install"] is False


@pytest.mark.django_db
def test_a_run_is_refused_for_an_unknown_option(collection):
    with pytest.raises(RunRefused):
        start_run(collection, "evaluate", {"fuzz": 1})
    with pytest.raises(RunRefused, match="unknown kind"):
        start_run(collection, "dance", {})
    assert not RerankerRun.objects.exists()


@pytest.mark.django_db
def test_non_staff_and_staff_without_rights_are_kept_out(client, collection):
    run = RerankerRun.objects.create(collection=collection, kind="evaluate")
    urls = [reverse("admin:relevance_rerankerrun_evaluate", args=[collection.pk]),
            reverse("admin:relevance_rerankerrun_train", args=[collection.pk]),
            reverse("admin:relevance_rerankerrun_progress", args=[run.pk]),
            reverse("admin:relevance_rerankerrun_change", args=[run.pk]),
            reverse("admin:relevance_rerankerrun_rerankers", args=[collection.pk]),
            reverse("admin:relevance_rerankerrun_rollback", args=[collection.pk])]
    User.objects.create_user("reader", password="pw")
    client.login(username="reader", password="pw")
    for url in urls:  # not staff: the admin's login page
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response.url, url
    staff = User.objects.create_user("clerk", password="pw", is_staff=True)
    client.login(username="clerk", password="pw")
    for url in urls:  # staff without the permissions
        assert client.get(url).status_code == 403, url
    assert client.post(urls[0], {"modes": ["keyword"], "rerank_top": "5", "k": 10, "recall_k": 10}).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_rerankerrun"),
                               Permission.objects.get(codename="view_collection"))
    staff = User.objects.get(pk=staff.pk)
    assert client.get(urls[2]).status_code == 200 and client.get(urls[3]).status_code == 200
    assert client.get(urls[4]).status_code == 200
    assert client.get(urls[0]).status_code == 403  # starting a run needs the right to change the collection
    assert not RerankerRun.objects.exclude(pk=run.pk).exists()


@pytest.mark.django_db
def test_a_finished_run_shows_its_results_and_no_polling(admin_client, collection):
    report = {"queries": 4, "cutoffs": {"ndcg": 10, "recall": 100, "mrr": 10}, "skipped_queries": {"count": 0},
              "reranker_model": None,
              "results": {"keyword": {"first stage": {"mean": {"ndcg@10": 0.61234, "recall@100": 1.0,
                                                                "mrr@10": 0.5}}}}}
    run = RerankerRun.objects.create(collection=collection, kind="evaluate", status="done",
                                     result={"report": report, "chart_png": "iVBORw0KGgo=", "table": "t"})
    page = admin_client.get(reverse("admin:relevance_rerankerrun_change", args=[run.pk])).content.decode()
    assert 'id="metrics-table"' in page and "0.6123" in page and "recall@100" in page
    assert 'src="data:image/png;base64,iVBORw0KGgo="' in page and "fetch(" not in page

    heldout = {"queries": 2, "modes": {"hybrid": {"first_stage": {"ndcg@10": 0.5}, "reranked": {"ndcg@10": 0.4},
                                                  "final": {"ndcg@10": 0.45}, "fusion": {"weight": 1, "k": 60}}}}
    failed = RerankerRun.objects.create(
        collection=collection, kind="train", status="failed", error="NOT INSTALLED: no better",
        result={"name": "papers-reranker-x", "card": "# papers-reranker-x: cross-encoder <b>", "message": "kept",
                "installed": False, "training": {"heldout": heldout}})
    page = admin_client.get(reverse("admin:relevance_rerankerrun_change", args=[failed.pk])).content.decode()
    assert "NOT INSTALLED: no better" in page and 'id="heldout-table"' in page and "0.4500" in page
    assert 'id="model-card"' in page and "cross-encoder &lt;b&gt;" in page  # escaped


def write_model(directory, first, final):
    directory.mkdir(parents=True)
    (directory / "training.json").write_text(json.dumps(
        {"heldout": {"queries": 3, "first_stage": {"ndcg@10": first}, "reranked": {"ndcg@10": final},
                     "final": {"ndcg@10": final}}}))
    return directory.resolve()


@pytest.mark.django_db
def test_trained_rerankers_and_the_roll_back_target(admin_client, collection, settings, tmp_path):
    settings.BASE_DIR = tmp_path
    models = tmp_path / "var" / "rerankers"
    oldest = write_model(models / "papers-reranker-20250101-000000", 0.5, 0.6)
    refused = write_model(models / "papers-reranker-20250102-000000", 0.5, 0.5)
    newest = write_model(models / "papers-reranker-20250103-000000", 0.5, 0.7)
    write_model(models / "other-reranker-20250101-000000", 0.5, 0.9)
    (models / "papers-reranker-20250104-000000").mkdir()  # no training.json
    trained = trained_rerankers(collection)
    assert [m.directory for m in trained[:3]] == [oldest, refused, newest]
    assert [m.beats_first_stage for m in trained] == [True, False, True, False]
    assert "no readable training.json" in trained[3].error
    assert rollback_target(collection, trained) is None  # nothing of ours installed
    collection.reranker_model = str(newest)
    assert rollback_target(collection, trained).directory == oldest  # the refused one is skipped
    collection.reranker_model = str(oldest)
    assert rollback_target(collection, trained) is None
    collection.save()

    page = admin_client.get(reverse("admin:relevance_rerankerrun_rerankers", args=[collection.pk])).content.decode()
    assert "papers-reranker-20250103-000000" in page and "other-reranker" not in page
    assert "does not beat the first stage" in page and "Roll back" not in page
    # An unknown name is refused before anything is asked.
    response = admin_client.get(reverse("admin:relevance_rerankerrun_install", args=[collection.pk]),
                                {"name": "../../etc"}, follow=True)
    assert "No such trained reranker" in response.content.decode()
    confirm = admin_client.get(reverse("admin:relevance_rerankerrun_install", args=[collection.pk]),
                               {"name": newest.name})
    assert confirm.status_code == 200 and b'name="confirm" value="yes"' in confirm.content
    collection.refresh_from_db()
    assert collection.reranker_model == str(oldest)  # asking is not installing


@pytest.mark.django_db
def test_posts_need_the_csrf_token(collection, admin_user):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    for name in ("evaluate", "train", "install", "rollback"):
        url = reverse(f"admin:relevance_rerankerrun_{name}", args=[collection.pk])
        assert client.post(url, {"confirm": "yes", "name": "x", "modes": ["keyword"]}).status_code == 403, name
    assert not RerankerRun.objects.exists()


@pytest.mark.django_db
def test_a_run_killed_by_its_time_limit_ends_failed_naming_it(collection):
    from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

    from relevance.run_tasks import evaluate_run, train_run
    from searchsite.celery import app

    app.loader.import_default_modules()
    running = RerankerRun.objects.create(collection=collection, kind="train", status="running")
    done = RerankerRun.objects.create(collection=collection, kind="evaluate", status="done")
    app.tasks[train_run.name].on_failure(TimeLimitExceeded(21660), "task-id", [running.pk], {}, None)
    app.tasks[evaluate_run.name].on_failure(SoftTimeLimitExceeded(), "task-id", [done.pk], {}, None)
    running.refresh_from_db()
    done.refresh_from_db()
    assert running.status == "failed" and running.finished_at is not None
    assert running.error == ("TimeLimitExceeded: relevance.run_tasks.train ran past its hard time limit of 21660 s "
                             "(RERANKER_RUN_SOFT_TIME_LIMIT + TASK_HARD_TIME_LIMIT_GRACE)")
    assert done.status == "done" and done.error == ""  # a run that ended keeps its outcome
