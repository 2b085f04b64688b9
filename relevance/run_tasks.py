"""Tasks of the `train` queue: `evaluate` and `train_reranker` runs started from the admin.

Each task runs the very function the command runs (`evaluate_collection`, `train_collection`
in relevance/management/commands/) on the options the command's own parser gives for the run's
parameters, with a RunProgress (relevance/run_progress.py) that writes progress bars and output
lines into the run's record. Bad options, refusals and failures end the run `failed` with the
error text; an unexpected exception is also raised again, so the worker's log has its traceback.

Messages are acknowledged when a worker takes them (Celery's default, not `acks_late`): a run
takes longer than Redis's visibility timeout may allow, and a run is not safe to repeat
unasked (a second training, a second model directory). A run past its time limit
(RERANKER_RUN_SOFT_TIME_LIMIT), or whose pool process was killed, ends `failed` saying so
(`on_failure`); one whose whole worker died stays `running`, its page saying when it last
reported, until it is past any task's time limit: then the next automatic run's check marks it
failed (fail_dead_runs).
"""
from __future__ import annotations

import base64
import io
import json
import logging
from datetime import timedelta
from pathlib import Path

from celery import Task, shared_task
from django.conf import settings
from django.core.management import CommandError, load_command_class
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError

# Every task's error text: it names a time limit that ran out, and its setting.
from indexer.tasks import error_text

from .evaluation import chart, evaluate_collection
from .collection_training import train_collection
from .models import RerankerRun
from .run_progress import RunProgress

log = logging.getLogger(__name__)

COMMANDS = {RerankerRun.Kind.EVALUATE: "evaluate", RerankerRun.Kind.TRAIN: "train_reranker"}


class RunRefused(ValueError):
    """A run that cannot start (bad parameters, broker down): nothing was queued."""


def command_options(kind: str, slug: str, parameters: dict) -> dict:
    """The options `manage.py <command> <slug>` would get with these parameters: the command's
    own defaults, then the parameters (option names, e.g. "rerank_top"); an unknown name is
    an error."""
    name = COMMANDS[kind]
    parser = load_command_class("relevance", name).create_parser("manage.py", name)
    options = vars(parser.parse_args([slug]))
    unknown = sorted(set(parameters) - set(options) - {"collection"})
    if unknown:
        raise RunRefused(f"unknown option(s) of {name}: {', '.join(unknown)}")
    return {**options, **parameters}


def option_choices(kind: str, option: str) -> tuple:
    """The choices the command's parser allows for an option (e.g. train_reranker's --mode)."""
    name = COMMANDS[kind]
    parser = load_command_class("relevance", name).create_parser("manage.py", name)
    return tuple(parser._option_string_actions[option].choices)


def judgment_count(collection) -> int:
    """The collection's staff and implicit judgments, what a train run records when queued."""
    return collection.judgments.count() + collection.implicit_judgments.count()


def start_run(collection, kind: str, parameters: dict, user=None,
              trigger: str = RerankerRun.Trigger.STAFF) -> RerankerRun:
    """Record a run and queue its task (once the record is committed)."""
    if kind not in COMMANDS:
        raise RunRefused(f"unknown kind of run {kind!r}; choose from {', '.join(COMMANDS)}")
    command_options(kind, collection.slug, parameters)  # refuse a bad name before anything is queued
    run = RerankerRun.objects.create(collection=collection, kind=kind, parameters=parameters, trigger=trigger,
                                     judgments=judgment_count(collection) if kind == RerankerRun.Kind.TRAIN else None,
                                     started_by=user if user is not None and user.is_authenticated else None)
    task = {RerankerRun.Kind.EVALUATE: evaluate_run, RerankerRun.Kind.TRAIN: train_run}[kind]

    def send():
        try:
            result = task.apply_async(args=[run.pk], retry=False)
        except OperationalError as exc:
            RerankerRun.objects.filter(pk=run.pk).update(
                status=RerankerRun.Status.FAILED, finished_at=timezone.now(),
                error=f"the task broker is unreachable, nothing was queued: {exc}")
            return
        RerankerRun.objects.filter(pk=run.pk).update(task_id=result.id)

    transaction.on_commit(send)
    return run


def chart_png(results: dict, metric: str, slug: str, n: int) -> str:
    """The evaluate command's chart (bars per mode and run), as base64 PNG for the run's page:
    the web process may not see the worker's files."""
    buffer = io.BytesIO()
    chart(results, buffer, metric, slug, n)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _begin(run_id: int, task_id: str) -> RerankerRun | None:
    updated = RerankerRun.objects.filter(pk=run_id, status=RerankerRun.Status.QUEUED).update(
        status=RerankerRun.Status.RUNNING, started_at=timezone.now(), task_id=task_id or "")
    if not updated:
        log.warning("run %s is not queued (deleted, or taken already); nothing to do", run_id)
        return None
    return RerankerRun.objects.select_related("collection").get(pk=run_id)


def _finish(run_id: int, status: str, result: dict | None = None, error: str = "") -> None:
    RerankerRun.objects.filter(pk=run_id).update(status=status, result=result, error=error,
                                                 finished_at=timezone.now())
    if status == RerankerRun.Status.FAILED:
        note_no_reranker(run_id)


def fail_dead_runs(collection) -> int:
    """Mark failed the collection's runs still `running` past the longest any task may run
    (RERANKER_RUN_SOFT_TIME_LIMIT + TASK_HARD_TIME_LIMIT_GRACE): their worker died without a word
    (on_failure covers a killed pool process, not a whole worker gone). Returns how many."""
    limit = settings.RERANKER_RUN_SOFT_TIME_LIMIT + settings.TASK_HARD_TIME_LIMIT_GRACE
    dead = list(RerankerRun.objects.filter(collection=collection, status=RerankerRun.Status.RUNNING,
                                           started_at__lt=timezone.now() - timedelta(seconds=limit))
                .values_list("pk", flat=True))
    for run_id in dead:
        RerankerRun.objects.filter(pk=run_id, status=RerankerRun.Status.RUNNING).update(
            status=RerankerRun.Status.FAILED, finished_at=timezone.now(),
            error=f"its worker died: still running after RERANKER_RUN_SOFT_TIME_LIMIT + TASK_HARD_TIME_LIMIT_GRACE "
                  f"({limit} s), longer than any task may run")
        note_no_reranker(run_id)
    return len(dead)


def note_no_reranker(run_id: int) -> None:
    """An automatic train run that ended without installing, on a collection left without a
    reranker: the collection keeps why, and its searches say it (search/rerank_client.py)."""
    run = RerankerRun.objects.select_related("collection").filter(pk=run_id).first()
    if run is None or run.kind != RerankerRun.Kind.TRAIN or run.trigger == RerankerRun.Trigger.STAFF:
        return
    collection = run.collection
    if collection.reranker_model.strip():
        return
    reason = (run.error or "it ended without a model").strip()
    collection.reranker_note = f"its automatic training (run #{run.pk}) installed no reranker: {reason}"
    collection.save(update_fields=["reranker_note", "updated_at"])


def _run(task, run_id: int, body) -> None:
    run = _begin(run_id, task.request.id)
    if run is None:
        return
    reporter = RunProgress.for_run(run_id)
    try:
        options = command_options(run.kind, run.collection.slug, run.parameters)
        status, result, error = body(run, options, reporter)
    except (CommandError, RunRefused) as exc:
        _finish(run_id, RerankerRun.Status.FAILED, error=str(exc))
        return
    except BaseException as exc:
        _finish(run_id, RerankerRun.Status.FAILED, error=error_text(exc, task))
        raise
    _finish(run_id, status, result, error)


def _evaluate(run, options, reporter):
    evaluation = evaluate_collection(run.collection, options, progress=reporter.progress, warn=reporter.echo)
    reporter.echo(evaluation.table)
    for line in evaluation.lines:
        reporter.echo(line)
    report = {key: value for key, value in evaluation.report.items() if key != "per_query"}
    results = report["results"]
    ndcg = f"ndcg@{report['cutoffs']['ndcg']}"
    return RerankerRun.Status.DONE, {
        "report": report, "table": evaluation.table,
        "output": str(evaluation.output) if evaluation.output else None,
        "chart_png": chart_png(results, ndcg, run.collection.slug, report["queries"]),
    }, ""


def heldout_chart_results(heldout: dict) -> dict:
    """training.json's held-out figures per mode, shaped as evaluate's results for its chart."""
    runs = (("first stage", "first_stage"), ("reranked", "reranked"), ("fused", "final"))
    return {mode: {label: {"mean": figures[key]} for label, key in runs if figures.get(key)}
            for mode, figures in heldout.get("modes", {}).items()}


def model_files(directory: Path) -> dict:
    """The model card and training.json of a model directory (what the run's page shows)."""
    card = directory / "README.md"
    report = directory / "training.json"
    return {"directory": str(directory), "name": directory.name,
            "card": card.read_text() if card.is_file() else "",
            "training": json.loads(report.read_text()) if report.is_file() else None}


def _train(run, options, reporter):
    if options["save_data"] or options["install_trained"]:
        raise RunRefused("the admin trains and installs; --save-data and --install-trained are for the command")
    trained = train_collection(run.collection, options, reporter, progress=reporter.progress)
    reporter.echo(trained.message)
    result = {**model_files(trained.directory), "installed": trained.installed, "message": trained.message}
    heldout = (result["training"] or {}).get("heldout", {})
    chart_results = heldout_chart_results(heldout)
    if chart_results:
        result["chart_png"] = chart_png(chart_results, "ndcg@10", f"{run.collection.slug} held-out",
                                        heldout.get("queries", 0))
    if trained.refusal:
        return RerankerRun.Status.FAILED, result, trained.refusal
    return RerankerRun.Status.DONE, result, ""


class RunTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        """Also when the body could not say it (a hard time limit or a lost pool process kills
        it): the run ends `failed` with the reason, unless it already ended."""
        RerankerRun.objects.filter(pk=args[0], status__in=[RerankerRun.Status.QUEUED, RerankerRun.Status.RUNNING]) \
            .update(status=RerankerRun.Status.FAILED, error=error_text(exc, self), finished_at=timezone.now())
        note_no_reranker(args[0])


@shared_task(name="relevance.run_tasks.evaluate", bind=True, base=RunTask, acks_late=False)
def evaluate_run(self, run_id: int) -> None:
    _run(self, run_id, _evaluate)


@shared_task(name="relevance.run_tasks.train", bind=True, base=RunTask, acks_late=False)
def train_run(self, run_id: int) -> None:
    _run(self, run_id, _train)
