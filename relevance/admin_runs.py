"""Reranker work from the admin: evaluate and train runs, and a collection's trained rerankers.

- On a collection's page, "Evaluate" and "Train reranker" open a form with the command's main
  options; submitting it records a RerankerRun and queues its task on the `train` queue
  (relevance/run_tasks.py: the same functions as `manage.py evaluate` / `train_reranker`).
- A run's page polls `<run>/progress/` (JSON: status, done, total, the stage's line, the output)
  and updates in place; when the run ends it shows the metrics table, the chart and, for a
  training, the model card.
- "Rerankers" lists the collection's trained model directories (under var/rerankers, as
  `train_reranker` names them) with their held-out figures; "install" and "roll back" (to the
  newest one trained before the current) go through `train_reranker --install-trained`'s own
  function, after a confirmation page.

Staff only (the admin's own login); starting a run or installing needs the right to change the
collection. Registered from reranker/admin.py.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.management import CommandError
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from indexer.models import Collection

from .evaluation import int_list
from .judgments import JUDGMENT_KINDS
from .collection_training import heldout_figures, install_trained, models_dir
from reranker.fusion import Fusion
from .models import RerankerRun
from .run_tasks import RunRefused, command_options, option_choices, start_run

# How often a run's page asks for its progress (milliseconds).
POLL_MILLISECONDS = 1500


def report_modes() -> tuple[str, ...]:
    """The search's modes, plainest first, as evaluate reports them and train_reranker mines them."""
    return option_choices(RerankerRun.Kind.TRAIN, "--mode")


class Lines(list):
    """Output lines kept in a list (the `stdout` of install_trained, shown in a message)."""

    def write(self, line: str) -> None:
        self.append(line)


# --------------------------------------------------------------------------- forms


class EvaluateForm(forms.Form):
    modes = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple, help_text="First-stage modes to measure.")
    queries = forms.CharField(required=False, max_length=1000, label="Queries file",
                              help_text="A BEIR queries.jsonl on the server; empty: the collection's judgments.")
    qrels = forms.CharField(required=False, max_length=1000, label="Qrels file",
                            help_text="A qrels TSV on the server (give both files, or neither).")
    judgments = forms.ChoiceField(choices=[(kind, kind) for kind in JUDGMENT_KINDS], initial="staff", required=False,
                                  help_text="The collection's judgments to read: staff, implicit (from clicks) or "
                                            "both (staff win a pair judged both ways).")
    rerank = forms.BooleanField(required=False, initial=True, help_text="Also rerank each mode's top candidates.")
    rerank_top = forms.CharField(initial="50,100", max_length=100, label="Rerank top",
                                 help_text="Candidates reranked: one or more N, comma-separated.")
    reranker_model = forms.CharField(required=False, max_length=1000, label="Reranker model",
                                     help_text="A cross-encoder id or directory; empty: the collection's reranker, "
                                               "else RERANKER_MODEL.")
    k = forms.IntegerField(min_value=1, initial=10, help_text="Cutoff of nDCG and MRR.")
    recall_k = forms.IntegerField(min_value=1, initial=100, label="Recall k", help_text="Cutoff of recall.")
    limit = forms.IntegerField(min_value=1, required=False, help_text="Evaluate only the first N judged queries.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["modes"].choices = [(m, m) for m in report_modes()]
        self.fields["modes"].initial = list(report_modes())

    def clean_rerank_top(self):
        try:
            int_list(self.cleaned_data["rerank_top"])
        except CommandError as exc:
            raise forms.ValidationError(str(exc)) from None
        return self.cleaned_data["rerank_top"]

    def clean(self):
        data = super().clean()
        queries, qrels = (data.get("queries") or "").strip(), (data.get("qrels") or "").strip()
        if bool(queries) != bool(qrels):
            raise forms.ValidationError("Give both the queries and the qrels file, or neither "
                                        "(the collection's judgments).")
        for name, value in (("queries", queries), ("qrels", qrels)):
            if value and not Path(value).is_file():
                self.add_error(name, f"No such file on the server: {value}")
        return data

    def parameters(self) -> dict:
        """The `evaluate` options these choices stand for (only what differs from nothing)."""
        data = self.cleaned_data
        parameters = {"modes": ",".join(m for m in report_modes() if m in data["modes"]), "rerank": data["rerank"],
                      "rerank_top": data["rerank_top"], "k": data["k"], "recall_k": data["recall_k"]}
        for name in ("queries", "qrels", "reranker_model"):
            if data.get(name, "").strip():
                parameters[name] = data[name].strip()
        if data.get("limit"):
            parameters["limit"] = data["limit"]
        if data.get("judgments") not in ("", None, "staff"):
            parameters["judgments"] = data["judgments"]
        return parameters


class TrainForm(forms.Form):
    """train_reranker's main options; initial values are the command's defaults."""
    base = forms.CharField(max_length=1000, help_text="Base model: a transformer or a CrossEncoder directory.")
    mode = forms.ChoiceField(help_text="First stage to mine from.")
    judgments = forms.ChoiceField(choices=[(kind, kind) for kind in JUDGMENT_KINDS], initial="staff", required=False,
                                  help_text="The collection's judgments to read: staff, implicit (from clicks) or "
                                            "both (staff win a pair judged both ways).")
    pseudo_queries = forms.IntegerField(min_value=0, label="Pseudo-queries",
                                        help_text="Documents whose title (with Pseudo-queries only: else "
                                                  "leading sentence, else key terms) becomes a query for their text.")
    pseudo_only = forms.BooleanField(required=False, label="Pseudo-queries only",
                                     help_text="Train on pseudo-queries alone (no judgments needed): judged "
                                               "queries, if any, decide the install, else held-out silver ones; "
                                               "pseudo-queries 0 means 2000.")
    epochs = forms.IntegerField(min_value=1)
    max_steps = forms.IntegerField(min_value=0, label="Max steps", help_text="0: the epochs decide.")
    max_length = forms.IntegerField(min_value=1, label="Max length", help_text="Tokens per (query, passage) pair.")
    negatives = forms.IntegerField(min_value=1, help_text="Hard negatives per positive.")
    batch_groups = forms.IntegerField(min_value=1, label="Batch groups", help_text="Groups per optimiser step.")
    layers = forms.IntegerField(min_value=0, help_text="Keep the base's first N layers (0: all).")
    heldout = forms.FloatField(label="Held-out share", help_text="Share of the judged queries held out.")
    rerank_top = forms.IntegerField(min_value=1, label="Rerank top", help_text="Held-out evaluation reranks this many.")
    seed = forms.IntegerField()
    device = forms.ChoiceField(choices=[(d, d) for d in ("auto", "cuda", "mps", "cpu")])
    no_install = forms.BooleanField(required=False, label="Do not install",
                                    help_text="Never make it the collection's reranker, even if it beats the first stage.")

    OPTIONS = ("base", "mode", "pseudo_queries", "epochs", "max_steps", "max_length", "negatives", "batch_groups",
               "layers", "heldout", "rerank_top", "seed", "device", "no_install")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["mode"].choices = [(m, m) for m in report_modes()]

    def clean_heldout(self):
        value = self.cleaned_data["heldout"]
        if not 0 < value < 1:
            raise forms.ValidationError("A share of the judged queries: between 0 and 1, both excluded.")
        return value

    def parameters(self) -> dict:
        parameters = {name: self.cleaned_data[name] for name in self.OPTIONS}
        if self.cleaned_data.get("judgments") not in ("", None, "staff"):
            parameters["judgments"] = self.cleaned_data["judgments"]
        if self.cleaned_data.get("pseudo_only"):
            parameters["pseudo_only"] = True
        return parameters


# --------------------------------------------------------------------------- trained rerankers


@dataclass
class TrainedReranker:
    directory: Path
    first_stage: float | None  # held-out nDCG@10 of the first stage
    with_model: float | None   # held-out nDCG@10 of the search with the model (fused, as installed)
    queries: int
    error: str = ""            # why its figures cannot be read

    @property
    def name(self) -> str:
        return self.directory.name

    @property
    def beats_first_stage(self) -> bool:
        return self.first_stage is not None and self.with_model is not None and self.with_model > self.first_stage


def trained_rerankers(collection: Collection) -> list[TrainedReranker]:
    """The collection's model directories made by `train_reranker` (default folder), oldest first."""
    found = []
    for directory in sorted(models_dir().glob(f"{collection.slug}-reranker-*")):
        if not directory.is_dir():
            continue
        try:
            first, with_model = heldout_figures(directory)
            queries = json.loads((directory / "training.json").read_text())["heldout"].get("queries", 0)
        except CommandError as exc:
            found.append(TrainedReranker(directory.resolve(), None, None, 0, error=str(exc)))
            continue
        found.append(TrainedReranker(directory.resolve(), first, with_model, queries))
    return found


def rollback_target(collection: Collection, trained: list[TrainedReranker]) -> TrainedReranker | None:
    """The newest model trained before the installed one that the install rule accepts."""
    current = [i for i, model in enumerate(trained) if str(model.directory) == collection.reranker_model]
    if not current:
        return None
    earlier = [model for model in trained[:current[0]] if model.beats_first_stage]
    return earlier[-1] if earlier else None


# --------------------------------------------------------------------------- the admin


def progress_payload(run: RerankerRun) -> dict:
    """What a run's page shows while it runs."""
    return {"id": run.pk, "status": run.status, "status_label": run.get_status_display(),
            "finished": run.finished, "done": run.progress_done, "total": run.progress_total,
            "text": run.progress_text, "log": run.log, "error": run.error,
            "reported_at": run.reported_at.isoformat() if run.reported_at else None}


def metrics_rows(report: dict) -> tuple[list[str], list[dict]]:
    """(metric names, rows of mode, run, values) of an evaluation report, as the command's table."""
    names = [f"{name}@{k}" for name, k in report["cutoffs"].items()]
    rows = [{"mode": mode, "run": run, "values": [r["mean"][name] for name in names]}
            for mode, by_run in report["results"].items() for run, r in by_run.items()]
    return names, rows


@admin.register(RerankerRun)
class RerankerRunAdmin(admin.ModelAdmin):
    list_display = ("__str__", "collection", "kind", "trigger", "status", "progress", "started_by", "created_at",
                    "finished_at")
    list_filter = ("kind", "trigger", "status", "collection")
    list_select_related = ("collection", "started_by")

    def has_add_permission(self, request):
        return False  # started from a collection's page (Evaluate, Train reranker)

    def has_change_permission(self, request, obj=None):
        return False  # a record of what ran

    @admin.display(description="Progress")
    def progress(self, run):
        if run.finished:
            return run.get_status_display()
        return f"{run.progress_text or 'waiting for a worker'}"

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("evaluate/<int:collection_id>/", view(self.evaluate_view), name="relevance_rerankerrun_evaluate"),
            path("train/<int:collection_id>/", view(self.train_view), name="relevance_rerankerrun_train"),
            path("<int:run_id>/progress/", view(self.progress_view), name="relevance_rerankerrun_progress"),
            path("rerankers/<int:collection_id>/", view(self.rerankers_view), name="relevance_rerankerrun_rerankers"),
            path("rerankers/<int:collection_id>/install/", view(self.install_view),
                 name="relevance_rerankerrun_install"),
            path("rerankers/<int:collection_id>/rollback/", view(self.rollback_view),
                 name="relevance_rerankerrun_rollback"),
            *super().get_urls(),
        ]

    # ------------------------------------------------------------------ helpers

    def collection_for_change(self, request, collection_id: int) -> Collection:
        collection = get_object_or_404(Collection, pk=collection_id)
        if not self.admin_site._registry[Collection].has_change_permission(request, collection):
            raise PermissionDenied
        return collection

    def context(self, request, title: str, **extra) -> dict:
        return {**self.admin_site.each_context(request), "opts": self.model._meta, "title": title,
                "has_view_permission": True, **extra}

    # ------------------------------------------------------------------ starting runs

    def evaluate_view(self, request, collection_id):
        return self.start_view(request, collection_id, RerankerRun.Kind.EVALUATE, EvaluateForm, initial={})

    def train_view(self, request, collection_id):
        collection = self.collection_for_change(request, collection_id)
        defaults = command_options(RerankerRun.Kind.TRAIN, collection.slug, {})
        return self.start_view(request, collection_id, RerankerRun.Kind.TRAIN, TrainForm,
                               initial={name: defaults[name] for name in TrainForm.OPTIONS})

    def start_view(self, request, collection_id, kind, form_class, initial):
        collection = self.collection_for_change(request, collection_id)
        form = form_class(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            try:
                run = start_run(collection, kind, form.parameters(), request.user)
            except RunRefused as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(request, f"{run} queued on the `train` queue.", messages.SUCCESS)
                return redirect(reverse("admin:relevance_rerankerrun_change", args=[run.pk]))
        label = RerankerRun.Kind(kind).label
        return TemplateResponse(request, "admin/relevance/rerankerrun/start.html", self.context(
            request, f"{label}: {collection}", collection=collection, form=form, kind=kind,
            recent=RerankerRun.objects.filter(collection=collection, kind=kind)[:5]))

    # ------------------------------------------------------------------ a run

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = get_object_or_404(RerankerRun.objects.select_related("collection", "started_by"), pk=object_id)
        if not self.has_view_permission(request, run):
            raise PermissionDenied
        result = run.result or {}
        extra = {}
        if run.kind == RerankerRun.Kind.EVALUATE and result.get("report"):
            extra["metric_names"], extra["metric_rows"] = metrics_rows(result["report"])
        if run.kind == RerankerRun.Kind.TRAIN and (result.get("training") or {}).get("heldout"):
            heldout = result["training"]["heldout"]
            extra["heldout_rows"] = [
                {"mode": mode, "first_stage": figures["first_stage"].get("ndcg@10"),
                 "reranked": figures["reranked"].get("ndcg@10"), "fused": (figures.get("final") or {}).get("ndcg@10"),
                 "fusion": Fusion(**figures["fusion"]).label if figures.get("fusion") else ""}
                for mode, figures in heldout.get("modes", {}).items()]
        return TemplateResponse(request, "admin/relevance/rerankerrun/run.html", self.context(
            request, str(run), run=run, result=result, payload=progress_payload(run),
            progress_url=reverse("admin:relevance_rerankerrun_progress", args=[run.pk]),
            poll_milliseconds=POLL_MILLISECONDS, parameters=json.dumps(run.parameters, indent=1), **extra))

    def progress_view(self, request, run_id):
        run = get_object_or_404(RerankerRun, pk=run_id)
        if not self.has_view_permission(request, run):
            raise PermissionDenied
        return JsonResponse(progress_payload(run))

    # ------------------------------------------------------------------ trained rerankers

    def rerankers_view(self, request, collection_id):
        collection = get_object_or_404(Collection, pk=collection_id)
        if not self.admin_site._registry[Collection].has_view_permission(request, collection):
            raise PermissionDenied
        trained = trained_rerankers(collection)
        return TemplateResponse(request, "admin/relevance/rerankerrun/rerankers.html", self.context(
            request, f"Rerankers of {collection}", collection=collection, trained=list(reversed(trained)),
            rollback=rollback_target(collection, trained)))

    def install_view(self, request, collection_id):
        collection = self.collection_for_change(request, collection_id)
        chosen = next((m for m in trained_rerankers(collection) if m.name == request.POST.get("name",
                                                                                               request.GET.get("name"))),
                      None)
        if chosen is None:
            self.message_user(request, "No such trained reranker of this collection.", messages.ERROR)
            return redirect(reverse("admin:relevance_rerankerrun_rerankers", args=[collection.pk]))
        return self.confirm_install(request, collection, chosen, "install")

    def rollback_view(self, request, collection_id):
        collection = self.collection_for_change(request, collection_id)
        target = rollback_target(collection, trained_rerankers(collection))
        if target is None:
            self.message_user(request, "Nothing to roll back to: the installed reranker is not one of this "
                                       "collection's trained models, or none trained before it beats the first stage.",
                              messages.ERROR)
            return redirect(reverse("admin:relevance_rerankerrun_rerankers", args=[collection.pk]))
        return self.confirm_install(request, collection, target, "roll back")

    def confirm_install(self, request, collection, chosen: TrainedReranker, action: str):
        """GET: the confirmation page; POST (confirmed): install through `--install-trained`'s function."""
        if request.method == "POST" and request.POST.get("confirm") == "yes":
            lines = Lines()
            try:
                message = install_trained(collection, chosen.directory, lines)
            except CommandError as exc:
                self.message_user(request, f"{collection}: {exc}", messages.ERROR)
            else:
                self.message_user(request, " ".join([message, *lines]), messages.SUCCESS)
            return redirect(reverse("admin:relevance_rerankerrun_rerankers", args=[collection.pk]))
        return TemplateResponse(request, "admin/relevance/rerankerrun/confirm_install.html", self.context(
            request, f"{action.capitalize()}: {collection}", collection=collection, chosen=chosen, action=action,
            now=timezone.now()))
