"""Text out of uploaded files: PDF (pypdf), HTML (BeautifulSoup + lxml), Markdown and plain text.

Every failure raises `ExtractionError` with a message a staff user can act on; nothing is
guessed silently (an encrypted PDF, bytes that are not text, a file that declares UTF-8 but is
not, a file type we do not read).
"""
from __future__ import annotations

import codecs
import io
import re
from dataclasses import dataclass
from pathlib import PurePath

# One document per file for these; .jsonl and .csv hold many records (indexer/importing.py).
DOCUMENT_EXTENSIONS = {".txt": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown",
                       ".html": "text/html", ".htm": "text/html", ".pdf": "application/pdf"}
RECORD_EXTENSIONS = {".jsonl": "application/jsonl", ".csv": "text/csv"}
SUPPORTED_EXTENSIONS = sorted(set(DOCUMENT_EXTENSIONS) | set(RECORD_EXTENSIONS))

# Elements whose content is never page text.
DROPPED_HTML_TAGS = ("script", "style", "noscript", "template", "svg", "iframe", "object", "head")
# Elements that end a line of text when rendered, so their words do not run together.
BLOCK_HTML_TAGS = ("address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt",
                   "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
                   "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table",
                   "td", "th", "tr", "ul")
META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
MARKDOWN_HEADING = re.compile(r"^\s{0,3}#\s+(.+?)\s*#*\s*$", re.MULTILINE)


class ExtractionError(ValueError):
    """A file whose text cannot be read; the message says why."""


@dataclass(frozen=True)
class ExtractedText:
    text: str
    title: str  # from the document itself where it has one (HTML <title>, PDF metadata, "# ...")
    content_type: str


def file_extension(filename: str) -> str:
    return PurePath(filename).suffix.lower()


def extract(filename: str, data: bytes, declared_charset: str | None = None) -> ExtractedText:
    """The text of one .txt/.md/.html/.pdf file. `declared_charset` is an encoding the sender
    stated (an upload's Content-Type charset, a command's --encoding): it is then enforced."""
    ext = file_extension(filename)
    if ext not in DOCUMENT_EXTENSIONS:
        raise ExtractionError(unsupported_message(filename))
    if not data:
        raise ExtractionError("the file is empty")
    if ext == ".pdf":
        return extract_pdf(data)
    if ext in (".html", ".htm"):
        return extract_html(data, declared_charset)
    text = decode_text(data, declared_charset)
    if ext in (".md", ".markdown"):
        # Markdown is readable as it is; its first level-1 heading is the title.
        heading = MARKDOWN_HEADING.search(text)
        return ExtractedText(text, heading.group(1) if heading else "", "text/markdown")
    return ExtractedText(text, "", "text/plain")


def unsupported_message(filename: str) -> str:
    ext = file_extension(filename) or "(no extension)"
    return f"unsupported file type {ext}; supported: {', '.join(SUPPORTED_EXTENSIONS)}"


# --------------------------------------------------------------------------- plain text


def looks_binary(data: bytes) -> bool:
    """NUL bytes do not occur in text files, except in UTF-16/32 (which start with a BOM)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return False
    return b"\x00" in data[:65536]


def decode_strict(data: bytes, encoding: str) -> str:
    """Decode with a declared encoding; a bad byte is reported with its line and byte offset."""
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise ExtractionError(f"unknown encoding {encoding!r}") from None
    if codec.name == "utf-8" and data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode(codec.name)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ExtractionError(
            f"invalid {codec.name.upper() if codec.name == 'utf-8' else codec.name} at line {line} "
            f"(byte {exc.start}: {data[exc.start:exc.start + 1]!r}); the file is declared as {encoding}"
        ) from None


def decode_text(data: bytes, declared_charset: str | None = None) -> str:
    """Bytes of a text file to str: the declared encoding if any (enforced), else a BOM, else
    UTF-8 if the bytes are valid UTF-8, else what charset-normalizer detects."""
    if looks_binary(data):
        raise ExtractionError("this looks like a binary file (it contains NUL bytes), not text")
    if declared_charset:
        return decode_strict(data, declared_charset)
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"),
                          (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
                          (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return decode_strict(data, encoding)
    try:
        # Most files are UTF-8, and detectors can mistake short UTF-8 texts for other encodings.
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise ExtractionError("this does not look like text in any known encoding (a binary file?)")
    return str(best)


# --------------------------------------------------------------------------- HTML


def declared_html_charset(data: bytes) -> str | None:
    match = META_CHARSET.search(data[:4096])
    return match.group(1).decode("ascii") if match else None


def extract_html(data: bytes, declared_charset: str | None = None) -> ExtractedText:
    from bs4 import BeautifulSoup

    if looks_binary(data):
        raise ExtractionError("this looks like a binary file (it contains NUL bytes), not HTML")
    # The page's own <meta charset> is a declaration too; bytes that break it are an error,
    # not something to paper over with replacement characters.
    charset = declared_charset or declared_html_charset(data)
    markup = decode_strict(data, charset) if charset else decode_text(data)
    soup = BeautifulSoup(markup, "lxml")
    title_tag = soup.find("title")
    title = " ".join(title_tag.get_text().split()) if title_tag else ""
    for tag in soup.find_all(DROPPED_HTML_TAGS):
        tag.decompose()
    for tag in soup.find_all(BLOCK_HTML_TAGS):
        tag.insert_after("\n")
    if not title:
        h1 = soup.find("h1")
        title = " ".join(h1.get_text().split()) if h1 else ""
    return ExtractedText(normalize_whitespace(soup.get_text()), title, "text/html")


def normalize_whitespace(text: str) -> str:
    """One line per block of text, single spaces inside lines (markup indentation is noise)."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


# --------------------------------------------------------------------------- PDF


def extract_pdf(data: bytes) -> ExtractedText:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    if not data.lstrip()[:5] == b"%PDF-":
        raise ExtractionError("not a PDF file (it does not start with %PDF-)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Many PDFs carry only an owner password (printing/copy restrictions) and open
            # with an empty user password; anything else we cannot read.
            try:
                opened = reader.decrypt("")
            except Exception:  # noqa: BLE001 - pypdf raises several kinds (missing AES support, ...)
                opened = 0
            if not opened:
                raise ExtractionError("the PDF is encrypted with a password; upload an unprotected copy")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        info = reader.metadata
        title = (info.title or "").strip() if info else ""
    except ExtractionError:
        raise
    except FileNotDecryptedError:
        raise ExtractionError("the PDF is encrypted with a password; upload an unprotected copy") from None
    except (PdfReadError, Exception) as exc:  # noqa: BLE001 - damaged PDFs make pypdf raise many kinds
        raise ExtractionError(f"the PDF is damaged and could not be read ({type(exc).__name__}: {exc})") from None
    text = "\n\n".join(p for p in pages if p)
    if not text.strip():
        raise ExtractionError(
            f"the PDF has no extractable text in its {len(pages)} page(s) (a scan without a text layer?)"
        )
    return ExtractedText(text, title, "application/pdf")
