"""Documents sent over HTTP: a JSON document or an NDJSON body, checked line by line, written by
the import's own upsert (indexer/importing.py: the same content hash rules, signals and indexing
tasks as the admin upload and `import_corpus`).

- Each line gets a result in the order sent: `created`, `updated`, `unchanged`, `error` (with the
  reason), or `replaced` for a line whose id comes again later in the body: the last occurrence
  wins, and both say so.
- Good lines are written even when others are bad; a body with no good line writes nothing (400).
- Refused as a whole, nothing written: a body over API_DOCUMENTS_MAX_BYTES (413) or with more
  than API_DOCUMENTS_MAX_LINES documents (413), a content type other than JSON or NDJSON (415),
  a body that is not UTF-8 or is empty (400).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from django.conf import settings

from indexer.importing import ImportBusy, Record, RecordRejected, format_bytes, make_record, upsert_records
from indexer.models import EXTERNAL_ID_MAX_LENGTH, Collection, Document

from .access import ApiError

FIELDS = ("id", "title", "text", "metadata")
JSON_TYPES = {"application/json"}
NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
API_SOURCE = "api"


@dataclass
class LineResult:
    line: int
    id: str | None = None
    result: str = "error"
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        body = {"line": self.line, "id": self.id, "result": self.result}
        if self.error:
            body["error"] = self.error
        if self.notes:
            body["note"] = "; ".join(self.notes)
        return body


def read_body(request) -> tuple[bytes, bool]:
    """The body and whether it is NDJSON; ApiError for a wrong type or a body over the limit."""
    content_type, _, parameters = request.META.get("CONTENT_TYPE", "").partition(";")
    content_type = content_type.strip().lower()
    if content_type not in JSON_TYPES | NDJSON_TYPES:
        raise ApiError(415, f"send one document as application/json or many as application/x-ndjson (one JSON "
                            f"object a line), not {content_type[:80] or 'no content type'!r}")
    charset = dict(part.strip().lower().partition("=")[::2] for part in parameters.split(";") if "=" in part).get("charset")
    if charset and charset.strip('"') not in ("utf-8", "utf8"):
        raise ApiError(415, f"the body must be UTF-8, not {charset[:40]!r}")
    limit = settings.API_DOCUMENTS_MAX_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ApiError(400, "the Content-Length header is not a number") from None
    if declared > limit:
        raise ApiError(413, f"the body is {format_bytes(declared)}; the limit is {format_bytes(limit)} "
                            f"(API_DOCUMENTS_MAX_BYTES): send fewer documents per request")
    data = request.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, f"the body is over the limit of {format_bytes(limit)} (API_DOCUMENTS_MAX_BYTES)")
    if not data.strip():
        raise ApiError(400, "the body is empty: send a JSON document or NDJSON lines")
    return data, content_type in NDJSON_TYPES


def split_lines(data: bytes, ndjson: bool) -> list[tuple[int, bytes]]:
    """(line number, bytes) of each non-blank line; a JSON body is one line, however it is laid out."""
    if not ndjson:
        return [(1, data)]
    lines = [(number, raw) for number, raw in enumerate(data.split(b"\n"), start=1) if raw.strip()]
    if len(lines) > settings.API_DOCUMENTS_MAX_LINES:
        raise ApiError(413, f"{len(lines)} documents in one body; the limit is {settings.API_DOCUMENTS_MAX_LINES} "
                            f"(API_DOCUMENTS_MAX_LINES): send them in several requests")
    return lines


def parse_line(number: int, raw: bytes) -> Record:
    """One document, checked as the import checks a JSONL record (indexer/importing.make_record)
    and stricter on its shape: only id, title, text and metadata, and metadata an object."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RecordRejected(f"not UTF-8 (byte {exc.start + 1})") from None
    except json.JSONDecodeError as exc:
        raise RecordRejected(f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise RecordRejected(f"expected a JSON object with {', '.join(FIELDS)}, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise RecordRejected(f"unknown field {unknown[0][:60]!r}: a document has {', '.join(FIELDS)} "
                             f"(put other values into metadata)")
    if "id" not in obj:
        raise RecordRejected("no 'id' field")
    if "text" not in obj:
        raise RecordRejected("no 'text' field")
    metadata = obj.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise RecordRejected(f"'metadata' must be a JSON object, not {type(metadata).__name__}")
    return make_record(obj, metadata, API_SOURCE, number, "application/json")


def line_id(raw: bytes) -> str | None:
    """The id of a rejected line, when it can be read, for its result."""
    try:
        value = json.loads(raw.decode("utf-8")).get("id")
    except (ValueError, AttributeError):
        return None
    return str(value)[:EXTERNAL_ID_MAX_LENGTH] if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def write_documents(collection: Collection, data: bytes, ndjson: bool) -> tuple[dict, int]:
    """(answer, HTTP status) of a POST of documents."""
    results: list[LineResult] = []
    records: dict[str, tuple[Record, LineResult]] = {}  # by external id: the last occurrence wins
    for number, raw in split_lines(data, ndjson):
        result = LineResult(number)
        results.append(result)
        try:
            record = parse_line(number, raw)
        except RecordRejected as exc:
            result.id, result.error = line_id(raw), str(exc)
            continue
        result.id = record.external_id
        earlier = records.get(record.external_id)
        if earlier is not None:
            earlier[1].result = "replaced"
            earlier[1].notes.append(f"the id comes again on line {number}, which wins")
            result.notes.append(f"replaces line {earlier[1].line} with the same id (the last occurrence wins)")
        records[record.external_id] = (record, result)
    kept = list(records.values())
    if kept:
        try:
            outcomes, _ = upsert_records(collection, [record for record, _ in kept], wait=False)
        except ImportBusy as exc:
            raise ApiError(409, str(exc), {"Retry-After": "5"}) from None
        for (_, result), outcome in zip(kept, outcomes):
            result.result = outcome
    counts = {name: sum(1 for r in results if r.result == name)
              for name in ("created", "updated", "unchanged", "replaced", "error")}
    answer = {"collection": collection.slug, "errors": counts["error"] > 0, **counts,
              "results": [r.to_dict() for r in results]}
    return answer, 200 if kept else 400


def document_body(document: Document) -> dict:
    """A document as GET returns it: its fields and where its indexing stands."""
    return {"collection": document.collection.slug, "id": document.external_id, "title": document.title,
            "text": document.text, "metadata": document.metadata, "status": document.status,
            "error": document.last_error or None, "chunks": document.chunk_count,
            "model": document.indexed_model or None,
            "indexed_at": document.indexed_at.isoformat() if document.indexed_at else None,
            "created_at": document.created_at.isoformat(), "updated_at": document.updated_at.isoformat()}


def check_document_id(external_id: str) -> str:
    if len(external_id) > EXTERNAL_ID_MAX_LENGTH:
        raise ApiError(400, f"the document id is {len(external_id)} characters; the limit is {EXTERNAL_ID_MAX_LENGTH}")
    return external_id
