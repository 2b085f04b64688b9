"""Create or update documents from files: the one engine behind `import_corpus` and the admin upload.

    sources (files)  ->  records (one per document, validated)  ->  upsert by external id  ->  report

- A file that cannot be read (too large, binary, unsupported, encrypted PDF, CSV without the
  named columns, ...) is rejected as a whole and changes nothing.
- Inside a JSONL or CSV file a bad record (malformed line, empty text, over-long title, ...) is
  rejected with its line number; the other records are imported.
- An external id that occurs more than once in one import is rejected everywhere it occurs: we
  cannot know which version is meant, so the stored document stays as it is.
- A record whose content hash equals the stored one is "unchanged" and not re-indexed; created
  and updated documents are queued for indexing after the transaction commits (indexer/tasks.py).
"""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import OperationalError, transaction
from django.utils import timezone

from . import tasks
from .chunking import chunk_text, load_tokenizer
from .extraction import (DOCUMENT_EXTENSIONS, RECORD_EXTENSIONS, ExtractionError, decode_strict,
                         extract, file_extension, looks_binary, unsupported_message)
from .models import EXTERNAL_ID_MAX_LENGTH, TITLE_MAX_LENGTH, Collection, Document, default_visibility
from .pipeline import chunk_limits

UPSERT_BATCH_SIZE = 500
FORMATS = ("beir", "jsonl", "csv", "files")


class ImportBusy(Exception):
    """Another import into the same collection holds it; nothing of this one was written."""


def is_lock_timeout(exc: OperationalError) -> bool:
    """The database gave up waiting for a lock: PostgreSQL's lock_not_available (NOWAIT), or
    SQLite's "database is locked" after its busy timeout."""
    return getattr(exc.__cause__, "sqlstate", None) == "55P03" or "database is locked" in str(exc)


def collection_access(visibility: str | None, group_names: list[str] | None) -> tuple[str, list[Group]]:
    """Visibility and groups of a collection created by an import: `visibility` or else
    settings.DEFAULT_COLLECTION_VISIBILITY; groups (existing ones, by name) only with `groups`.
    Raises ValueError saying what is wrong."""
    group_names = list(dict.fromkeys(group_names or []))
    if visibility is None:
        visibility = Collection.Visibility.GROUPS if group_names else default_visibility()
    if visibility not in Collection.Visibility.values:
        raise ValueError(f"unknown visibility {visibility!r}; choose one of {', '.join(Collection.Visibility.values)}")
    if group_names and visibility != Collection.Visibility.GROUPS:
        raise ValueError(f"groups are given but the visibility is {visibility!r}; groups only apply to "
                         f"visibility {Collection.Visibility.GROUPS.value!r}")
    groups = list(Group.objects.filter(name__in=group_names))
    missing = sorted(set(group_names) - {g.name for g in groups})
    if missing:
        raise ValueError(f"no group named {', '.join(map(repr, missing))}; create it first "
                         "(admin: Authentication and Authorization > Groups)")
    return visibility, groups


def describe_access(collection: Collection) -> str:
    """Who may search the collection, in words (for the person who just created it)."""
    if collection.visibility == Collection.Visibility.PUBLIC:
        return "public: anyone may search it"
    if collection.visibility == Collection.Visibility.AUTHENTICATED:
        return "authenticated: signed-in users may search it"
    names = sorted(collection.groups.values_list("name", flat=True))
    if names:
        return f"groups: members of {', '.join(names)} (and superusers) may search it"
    return "groups, none selected: only superusers may search it"


class FileRejected(Exception):
    """The whole file is rejected; nothing in it is imported."""


class RecordRejected(Exception):
    """One record is rejected; the rest of its file goes on."""


@dataclass(frozen=True)
class ImportOptions:
    # Field/column names; None means the defaults: `_id` or `id`, `title`, `text`.
    id_column: str | None = None
    title_column: str | None = None
    text_column: str | None = None
    # Encoding the files are declared to be in (enforced); None: UTF-8 for JSONL/CSV, detected
    # for .txt/.md, the page's <meta charset> for HTML.
    encoding: str | None = None
    max_bytes: int | None = None  # None: settings.UPLOAD_MAX_BYTES

    @property
    def size_limit(self) -> int:
        return self.max_bytes if self.max_bytes is not None else settings.UPLOAD_MAX_BYTES


@dataclass(frozen=True)
class Source:
    """One file to import: a path on disk or an uploaded file."""

    name: str  # shown in the report; the external id of a one-document file (.txt, .pdf, ...)
    size: int
    read: Callable[[], bytes]
    charset: str | None = None  # declared by the sender (an upload's Content-Type)

    @classmethod
    def from_path(cls, path: Path, name: str | None = None) -> "Source":
        return cls(name or path.name, path.stat().st_size, path.read_bytes)

    @classmethod
    def from_upload(cls, upload) -> "Source":
        def read() -> bytes:
            upload.seek(0)
            return upload.read()

        return cls(PurePath(upload.name).name, upload.size, read, getattr(upload, "charset", None))


@dataclass
class Record:
    external_id: str
    title: str
    text: str
    metadata: dict
    source: str
    line: int | None
    content_type: str

    @property
    def where(self) -> str:
        return f"{self.source} line {self.line}" if self.line else self.source


@dataclass
class Rejection:
    reason: str
    line: int | None = None
    external_id: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        ident = f"[{self.external_id}] " if self.external_id else ""
        return f"{where}{ident}{self.reason}"


@dataclass
class FileReport:
    name: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    error: str = ""  # set when the whole file was rejected

    @property
    def outcome(self) -> str:
        if self.error:
            return "rejected"
        if self.rejected:
            return "partly rejected"
        return "ok"


@dataclass
class ImportReport:
    collection: Collection
    files: list[FileReport] = field(default_factory=list)
    changed_ids: list[int] = field(default_factory=list)

    def _sum(self, attr: str) -> int:
        return sum(getattr(f, attr) for f in self.files)

    @property
    def created(self) -> int:
        return self._sum("created")

    @property
    def updated(self) -> int:
        return self._sum("updated")

    @property
    def unchanged(self) -> int:
        return self._sum("unchanged")

    @property
    def rejected_records(self) -> int:
        return sum(len(f.rejected) for f in self.files)

    @property
    def rejected_files(self) -> int:
        return sum(1 for f in self.files if f.error)

    @property
    def has_rejections(self) -> bool:
        return any(f.error or f.rejected for f in self.files)


# --------------------------------------------------------------------------- reading files


def read_source(source: Source, options: ImportOptions) -> tuple[list[Record], list[Rejection]]:
    """Records and per-record rejections of one file; raises FileRejected for the whole file."""
    limit = options.size_limit
    if source.size > limit:
        raise FileRejected(f"the file is {format_bytes(source.size)}; the limit is {format_bytes(limit)} "
                           "(setting UPLOAD_MAX_BYTES)")
    ext = file_extension(source.name)
    if ext not in DOCUMENT_EXTENSIONS and ext not in RECORD_EXTENSIONS:
        raise FileRejected(unsupported_message(source.name))
    data = source.read()
    if not data.strip():
        raise FileRejected("the file is empty")
    charset = options.encoding or source.charset
    try:
        if ext == ".jsonl":
            records, rejections = read_jsonl(source.name, data, options, charset)
        elif ext == ".csv":
            records, rejections = read_csv(source.name, data, options, charset)
        else:
            extracted = extract(source.name, data, charset)
            fields = {"id": source.name, "title": extracted.title or PurePath(source.name).stem,
                      "text": extracted.text}
            records, rejections = [make_record(fields, {}, source.name, None, extracted.content_type)], []
    except (ExtractionError, RecordRejected) as exc:
        raise FileRejected(str(exc)) from None
    if not records and not rejections:
        raise FileRejected("no documents found in the file")
    return records, rejections


def read_jsonl(name: str, data: bytes, options: ImportOptions, charset: str | None):
    """One JSON object a line (BEIR's corpus.jsonl layout by default). Lines are decoded one by
    one so that a bad line is rejected with its number and the others still count."""
    if looks_binary(data):
        raise FileRejected("this looks like a binary file (it contains NUL bytes), not JSON lines")
    records, rejections = [], []
    id_keys = (options.id_column,) if options.id_column else ("_id", "id")
    title_key = options.title_column or "title"
    text_key = options.text_column or "text"
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = decode_strict(raw, charset or "utf-8").strip()
        except ExtractionError as exc:
            rejections.append(Rejection(str(exc).replace("at line 1 ", ""), number))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            rejections.append(Rejection(f"not valid JSON: {exc.msg} (column {exc.colno})", number))
            continue
        if not isinstance(obj, dict):
            rejections.append(Rejection(f"expected a JSON object, got {type(obj).__name__}", number))
            continue
        id_key = next((k for k in id_keys if k in obj), id_keys[0])
        try:
            metadata = obj.get("metadata", {})
            if not isinstance(metadata, dict):
                raise RecordRejected("'metadata' must be a JSON object")
            # Other keys are kept, not dropped: they become metadata fields.
            extra = {k: v for k, v in obj.items() if k not in (id_key, title_key, text_key, "metadata")}
            fields = {"id": obj.get(id_key), "title": obj.get(title_key), "text": obj.get(text_key)}
            if fields["id"] is None:
                raise RecordRejected(f"no {' or '.join(repr(k) for k in id_keys)} field")
            if fields["text"] is None:
                raise RecordRejected(f"no {text_key!r} field")
            records.append(make_record(fields, {**extra, **metadata}, name, number, "application/jsonl"))
        except RecordRejected as exc:
            ident = obj.get(id_key)
            rejections.append(Rejection(str(exc), number, str(ident) if ident is not None else None))
    return records, rejections


def read_csv(name: str, data: bytes, options: ImportOptions, charset: str | None):
    """A CSV file with a header row; the id and text columns are required, the title column if
    it was named explicitly; every other column becomes a metadata field."""
    if looks_binary(data):
        raise FileRejected("this looks like a binary file (it contains NUL bytes), not CSV")
    text = decode_strict(data, charset or "utf-8")
    id_col = options.id_column or "id"
    title_col = options.title_column or "title"
    text_col = options.text_column or "text"
    csv.field_size_limit(max(options.size_limit, 131072))
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    required = [id_col, text_col] + ([title_col] if options.title_column else [])
    missing = [c for c in required if c not in header]
    if missing:
        raise FileRejected(f"missing column(s) {', '.join(repr(c) for c in missing)}; the header has "
                           f"{', '.join(repr(c) for c in header) or 'no columns'} "
                           "(name them with the id/title/text column options)")
    records, rejections = [], []
    try:
        for row in reader:
            line = reader.line_num
            try:
                if None in row:
                    raise RecordRejected(f"the row has {len(header) + len(row[None])} fields; the header has {len(header)}")
                metadata = {k: v for k, v in row.items() if k not in (id_col, title_col, text_col)}
                fields = {"id": row.get(id_col), "title": row.get(title_col), "text": row.get(text_col)}
                records.append(make_record(fields, metadata, name, line, "text/csv"))
            except RecordRejected as exc:
                rejections.append(Rejection(str(exc), line, row.get(id_col) or None))
    except csv.Error as exc:
        raise FileRejected(f"CSV error at line {reader.line_num}: {exc}") from None
    return records, rejections


def make_record(fields: dict, metadata: dict, source: str, line: int | None, content_type: str) -> Record:
    """Validate one document's fields; raises RecordRejected with the reason."""
    raw_id, title, text = fields.get("id"), fields.get("title"), fields.get("text")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        raise RecordRejected(f"the external id must be a string or an integer, not {type(raw_id).__name__}")
    external_id = str(raw_id).strip()
    if not external_id:
        raise RecordRejected("empty external id")
    if len(external_id) > EXTERNAL_ID_MAX_LENGTH:
        raise RecordRejected(f"the external id is {len(external_id)} characters; the limit is {EXTERNAL_ID_MAX_LENGTH}")
    if title is None:
        title = ""
    if not isinstance(title, str):
        raise RecordRejected(f"the title must be a string, not {type(title).__name__}")
    title = title.strip()
    if len(title) > TITLE_MAX_LENGTH:
        raise RecordRejected(f"the title is {len(title)} characters; the limit is {TITLE_MAX_LENGTH}")
    if not isinstance(text, str):
        raise RecordRejected(f"the text must be a string, not {type(text).__name__}")
    if not text.strip():
        raise RecordRejected("empty text")
    if "\x00" in text or "\x00" in title:
        # PostgreSQL cannot store NUL characters in text columns.
        raise RecordRejected("the text contains NUL characters")
    return Record(external_id, title, text, metadata, source, line, content_type)


def format_bytes(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} bytes"  # unreachable


# --------------------------------------------------------------------------- sources on disk


def detect_format(path: Path) -> str:
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if path.is_dir():
        return "beir" if (path / "corpus.jsonl").is_file() else "files"
    ext = path.suffix.lower()
    if ext == ".jsonl":
        return "jsonl"
    if ext == ".csv":
        return "csv"
    if ext in DOCUMENT_EXTENSIONS:
        return "files"
    raise ValueError(f"cannot tell the format of {path}; pass --format ({', '.join(FORMATS)})")


def sources_from_path(path: Path, fmt: str) -> list[Source]:
    """The files an import of `path` in format `fmt` reads."""
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if fmt == "beir":
        corpus = path / "corpus.jsonl" if path.is_dir() else path
        if not corpus.is_file():
            raise ValueError(f"{path} is not a BEIR folder: it has no corpus.jsonl")
        return [Source.from_path(corpus)]
    if fmt in ("jsonl", "csv"):
        if not path.is_file():
            raise ValueError(f"--format {fmt} needs a file, and {path} is a folder")
        return [Source.from_path(path)]
    if fmt == "files":
        if path.is_file():
            return [Source.from_path(path)]
        # Every file is reported, unsupported ones as rejected: nothing is skipped silently.
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return [Source.from_path(p, p.relative_to(path).as_posix()) for p in files]
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


# --------------------------------------------------------------------------- the upsert


def import_sources(collection: Collection, sources: Iterable[Source], options: ImportOptions | None = None,
                   progress: Callable[[int, int], None] | None = None, wait: bool = True) -> ImportReport:
    """Read every source, then create/update the collection's documents in one transaction and
    queue the changed ones for indexing once it commits. `progress(n, total)` is told about each
    batch of n records out of total. `wait=False` (web requests, which must not hang behind a
    long import) raises ImportBusy at once when another import holds the collection."""
    options = options or ImportOptions()
    report = ImportReport(collection)
    records: list[Record] = []
    file_reports: dict[str, FileReport] = {}
    for source in sources:
        file_report = FileReport(source.name)
        report.files.append(file_report)
        if source.name in file_reports:
            file_report.error = "another file of this import has the same name"
            continue
        file_reports[source.name] = file_report
        try:
            file_records, file_rejections = read_source(source, options)
        except FileRejected as exc:
            file_report.error = str(exc)
            continue
        file_report.rejected.extend(file_rejections)
        records.extend(file_records)

    records = reject_duplicates(records, file_reports)
    outcomes, report.changed_ids = upsert_records(collection, records, progress=progress, wait=wait)
    for record, outcome in zip(records, outcomes):
        file_report = file_reports[record.source]
        setattr(file_report, outcome, getattr(file_report, outcome) + 1)
    return report


def upsert_records(collection: Collection, records: list[Record], *, wait: bool = True,
                   progress: Callable[[int, int], None] | None = None) -> tuple[list[str], list[int]]:
    """Create or update `records` (external ids unique among them) in one transaction and queue
    the changed documents for indexing once it commits: the one write path of a document, from a
    file import or the API (api/documents.py). Returns each record's outcome (`created`,
    `updated` or `unchanged`, in order) and the primary keys of the changed documents. Raises
    ImportBusy (`wait=False`) when another import holds the collection; nothing is written then."""
    outcomes: list[str] = []
    changed_ids: list[int] = []
    try:
        with transaction.atomic():
            # One import per collection at a time: two imports of the same new external id would
            # both see it missing and the second insert would fail on the unique constraint
            # (PostgreSQL; SQLite's IMMEDIATE transactions already take turns). Waiting on the
            # collection's row, the second one then finds the first one's documents.
            Collection.objects.select_for_update(nowait=not wait).filter(pk=collection.pk).first()
            for start in range(0, len(records), UPSERT_BATCH_SIZE):
                batch = records[start:start + UPSERT_BATCH_SIZE]
                batch_outcomes, batch_changed = upsert_batch(collection, batch)
                outcomes.extend(batch_outcomes)
                changed_ids.extend(batch_changed)
                if progress:
                    progress(len(batch), len(records))
            tasks.queue_for_indexing(changed_ids)
    except OperationalError as exc:
        if is_lock_timeout(exc):
            raise ImportBusy(f"another import into {collection.slug!r} is running; try again when it has "
                             "finished") from exc
        raise
    return outcomes, changed_ids


def reject_duplicates(records: list[Record], file_reports: dict[str, FileReport]) -> list[Record]:
    by_id: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_id[record.external_id].append(record)
    kept = []
    for record in records:
        same = by_id[record.external_id]
        if len(same) == 1:
            kept.append(record)
            continue
        places = ", ".join(r.where for r in same)
        file_reports[record.source].rejected.append(Rejection(
            f"duplicate external id: it occurs {len(same)} times in this import ({places}); "
            "none of them was imported", record.line, record.external_id))
    return kept


def upsert_batch(collection: Collection, batch: list[Record]) -> tuple[list[str], list[int]]:
    """Create or update one batch; returns each record's outcome (created, updated, unchanged)
    and the primary keys of the created and updated documents."""
    existing = {
        external_id: (pk, content_hash)
        for external_id, pk, content_hash in Document.objects.filter(
            collection=collection, external_id__in=[r.external_id for r in batch]
        ).values_list("external_id", "pk", "content_hash")
    }
    to_create, to_update, outcomes = [], [], []
    now = timezone.now()
    for record in batch:
        content_hash = Document.compute_hash(record.title, record.text, record.metadata)
        values = dict(title=record.title, text=record.text, metadata=record.metadata, content_hash=content_hash,
                      source_filename=PurePath(record.source).name[:500], content_type=record.content_type)
        if record.external_id not in existing:
            to_create.append(Document(collection=collection, external_id=record.external_id, **values))
            outcomes.append("created")
        elif existing[record.external_id][1] == content_hash:
            outcomes.append("unchanged")
        else:
            to_update.append(Document(pk=existing[record.external_id][0], updated_at=now, **values))
            outcomes.append("updated")
    created = Document.objects.bulk_create(to_create)
    if to_update:
        Document.objects.bulk_update(
            to_update, ["title", "text", "metadata", "content_hash", "source_filename", "content_type", "updated_at"],
            batch_size=100,
        )
    return outcomes, [d.pk for d in created] + [d.pk for d in to_update]


# --------------------------------------------------------------------------- chunk counts


def model_max_seq_length(model_id: str) -> int | None:
    """The sequence length a sentence-transformers model reads (its sentence_bert_config.json),
    which can be shorter than its tokenizer's model_max_length (256 vs 512 for MiniLM)."""
    from .embedding import resolve_model_path

    config = Path(resolve_model_path(model_id)) / "sentence_bert_config.json"
    if config.is_file():
        return json.loads(config.read_text()).get("max_seq_length")
    return None


def collection_chunker(collection: Collection) -> tuple[Callable[[str], list], int, int]:
    """A function text -> chunks exactly as the indexing pipeline cuts them for this collection
    (its chunk_limits), with the chunk size and overlap in tokens."""
    tokenizer = load_tokenizer(collection.embedding_model)
    size, overlap = chunk_limits(collection, tokenizer, model_max_seq_length(collection.embedding_model))
    return (lambda text: chunk_text(text, tokenizer, size, overlap)), size, overlap
