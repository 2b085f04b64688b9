"""Judgments in and out: BEIR qrels + queries files ⇄ `Judgment` rows.

BEIR layout: `queries.jsonl` (one {"_id", "text"} object a line) and a qrels TSV
(`query-id<TAB>corpus-id<TAB>score`, optional header line). Corpus ids are a collection's
document `external_id`s.

Reading is strict: a malformed line is reported with its file and line number and nothing is
written; a qrels line whose query or document is unknown is skipped and counted in the report
(a partial corpus is a normal situation), never silently dropped.
"""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction

from indexer.models import Collection, Document

from .models import MAX_GRADE, QUERY_MAX_LENGTH, ImplicitJudgment, Judgment, normalize_query


class JudgmentFileError(ValueError):
    """A queries or qrels file that cannot be read as a whole; nothing was imported."""


def read_queries(path: str | Path, too_long: dict[str, int] | None = None) -> dict[str, str]:
    """{query id: text} from a BEIR queries.jsonl.

    A query the search refuses (empty, or longer than QUERY_MAX_LENGTH) is an error; given a
    `too_long` dict, it is left out and recorded there instead ({query id: length, 0 for an
    empty one}): standard IR collections hold a few such queries, and the caller reports them."""
    path = Path(path)
    queries: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise JudgmentFileError(f"{path}: cannot read queries: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            qid, text = str(record["_id"]), normalize_query(str(record["text"]))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise JudgmentFileError(f"{path}:{number}: not a query object with _id and text ({exc})") from None
        if qid in queries or (too_long is not None and qid in too_long):
            raise JudgmentFileError(f"{path}:{number}: duplicate query id {qid!r}")
        if not text:
            if too_long is None:
                raise JudgmentFileError(f"{path}:{number}: query {qid!r} has empty text")
            too_long[qid] = 0
            continue
        if len(text) > QUERY_MAX_LENGTH:
            if too_long is None:
                raise JudgmentFileError(f"{path}:{number}: query {qid!r} is longer than {QUERY_MAX_LENGTH} characters")
            too_long[qid] = len(text)
            continue
        queries[qid] = text
    return queries


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """{query id: {document id: grade}} from a BEIR/TREC-style qrels TSV."""
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise JudgmentFileError(f"{path}: cannot read qrels: {exc}") from None
    with handle:
        try:
            rows = list(csv.reader(handle, delimiter="\t"))
        except UnicodeDecodeError as exc:
            raise JudgmentFileError(f"{path}: not UTF-8: {exc}") from None
    for number, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip():
            continue
        if number == 1 and row[0].strip().lower() in {"query-id", "query_id", "qid"}:
            continue  # header
        if len(row) == 4:  # TREC: qid, iteration, docid, grade
            row = [row[0], row[2], row[3]]
        if len(row) != 3:
            raise JudgmentFileError(f"{path}:{number}: expected query-id, corpus-id and score separated by tabs")
        qid, doc_id, grade_text = (cell.strip() for cell in row)
        try:
            grade = int(grade_text)
        except ValueError:
            raise JudgmentFileError(f"{path}:{number}: score {grade_text!r} is not an integer") from None
        if not 0 <= grade <= MAX_GRADE:
            raise JudgmentFileError(f"{path}:{number}: score {grade} is outside 0..{MAX_GRADE}")
        if doc_id in qrels.get(qid, {}):
            raise JudgmentFileError(f"{path}:{number}: query {qid!r} judges document {doc_id!r} twice")
        qrels.setdefault(qid, {})[doc_id] = grade
    return qrels


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    unknown_queries: set[str] = field(default_factory=set)
    unknown_documents: set[str] = field(default_factory=set)
    skipped_lines: int = 0
    merged: int = 0     # lines whose query text and document another query id already judged


    def summary(self) -> str:
        text = f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged"
        if self.merged:
            text += f", {self.merged} merged (same query text under another id)"
        if self.skipped_lines:
            text += (f"; {self.skipped_lines} qrels lines skipped ({len(self.unknown_queries)} query ids not in "
                     f"the queries file, {len(self.unknown_documents)} document ids not in the collection)")
        return text


def import_judgments(collection: Collection, queries: dict[str, str], qrels: dict[str, dict[str, int]],
                     source: str = Judgment.Source.IMPORT) -> ImportReport:
    """Upsert one judgment per (query text, document); re-importing the same files changes nothing."""
    report = ImportReport()
    doc_ids = {doc_id for judged in qrels.values() for doc_id in judged}
    documents = dict(
        Document.objects.filter(collection=collection, external_id__in=doc_ids).values_list("external_id", "pk")
    )
    existing = {
        (query, document_id): (pk, grade, query_id)
        for pk, query, document_id, grade, query_id in Judgment.objects.filter(collection=collection)
        .values_list("pk", "query", "document_id", "grade", "query_id")
    }
    # First the wanted state, one entry per (query text, document): two query ids with the same
    # text (SciFact has some) are one query, with the higher grade.
    wanted: dict[tuple[str, int], tuple[int, str]] = {}
    for qid, judged in qrels.items():
        if qid not in queries:
            report.unknown_queries.add(qid)
            report.skipped_lines += len(judged)
            continue
        for doc_id, grade in judged.items():
            if doc_id not in documents:
                report.unknown_documents.add(doc_id)
                report.skipped_lines += 1
                continue
            key = (queries[qid], documents[doc_id])
            if key in wanted:
                report.merged += 1
                grade = max(grade, wanted[key][0])
                qid_kept = wanted[key][1]
            else:
                qid_kept = qid
            wanted[key] = (grade, qid_kept)
    to_create, to_update = [], []
    for (text, document_id), (grade, qid) in wanted.items():
        if (text, document_id) not in existing:
            to_create.append(Judgment(collection=collection, query=text, query_id=qid, document_id=document_id,
                                      grade=grade, source=source))
            continue
        pk, old_grade, old_qid = existing[(text, document_id)]
        if old_grade != grade or not old_qid:
            to_update.append(Judgment(pk=pk, grade=grade, query_id=old_qid or qid))
        else:
            report.unchanged += 1
    with transaction.atomic():
        Judgment.objects.bulk_create(to_create, batch_size=500)
        Judgment.objects.bulk_update(to_update, ["grade", "query_id"], batch_size=500)
    report.created, report.updated = len(to_create), len(to_update)
    return report


def query_id_for(text: str) -> str:
    """A stable id for a query judged on the search page (it has no id of its own)."""
    return "q-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


# Which judgments evaluation and training read: staff grades (imported, marked on the search
# page, entered in the admin), the grades clicks imply, or both with staff winning per pair.
JUDGMENT_KINDS = ("staff", "implicit", "both")


def collection_qrels(collection: Collection, kinds: str = "staff") -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """(queries, qrels) of a collection's judgments of `kinds` (JUDGMENT_KINDS), keyed by query id
    (imported or derived). With "both", an implicit grade counts only where staff have not
    judged that (query, document)."""
    if kinds not in JUDGMENT_KINDS:
        raise ValueError(f"judgments must be one of {', '.join(JUDGMENT_KINDS)}, not {kinds!r}")
    rows = []
    if kinds in ("staff", "both"):
        rows += ((0, *row) for row in Judgment.objects.filter(collection=collection)
                 .values_list("query", "query_id", "document__external_id", "grade"))
    if kinds in ("implicit", "both"):
        rows += ((1, text, "", doc_id, grade) for text, doc_id, grade in ImplicitJudgment.objects
                 .filter(collection=collection).values_list("query", "document__external_id", "grade"))
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    ids_by_text: dict[str, str] = {}
    # Staff rows first: they name the query's id and win a (query, document) both judged.
    for _, text, qid, doc_id, grade in sorted(rows):
        # The same text may carry an imported id on some rows and none on others (added later
        # on the search page, or implied by clicks): it stays one query, under its first id.
        qid = ids_by_text.setdefault(text, qid or query_id_for(text))
        queries[qid] = text
        qrels.setdefault(qid, {}).setdefault(doc_id, grade)
    return queries, qrels


def export_judgments(collection: Collection, directory: str | Path) -> tuple[Path, Path, int]:
    """Write `queries.jsonl` and `qrels.tsv` (BEIR layout) of a collection's judgments."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    queries, qrels = collection_qrels(collection)
    queries_path, qrels_path = directory / "queries.jsonl", directory / "qrels.tsv"
    with queries_path.open("w", encoding="utf-8") as out:
        for qid, text in queries.items():
            out.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    lines = 0
    with qrels_path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, delimiter="\t", lineterminator="\n")
        writer.writerow(["query-id", "corpus-id", "score"])
        for qid, judged in qrels.items():
            for doc_id, grade in judged.items():
                writer.writerow([qid, doc_id, grade])
                lines += 1
    return queries_path, qrels_path, lines
