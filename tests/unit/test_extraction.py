"""Text extraction from the file types staff upload, and a clear error for each bad one."""
import codecs

import pytest

from indexer.extraction import ExtractionError, decode_text, extract
from tests.support.files import make_pdf

FRENCH = ("Les études épidémiologiques récentes montrent que la consommation de café réduit "
          "légèrement le risque de maladies cardiaques chez les personnes âgées. Après contrôle "
          "des facteurs confondants, l'effet protecteur demeure significatif à l'échelle européenne.")


def test_plain_utf8_text():
    result = extract("notes.txt", "Größe: 5 µm — ok\n".encode())
    assert result.text == "Größe: 5 µm — ok\n"
    assert result.content_type == "text/plain"


def test_plain_text_in_a_legacy_encoding_is_detected():
    data = FRENCH.encode("cp1252")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    assert extract("notes.txt", data).text == FRENCH


def test_utf16_with_bom():
    assert decode_text(codecs.BOM_UTF16_LE + "naïve text".encode("utf-16-le")) == "naïve text"


def test_declared_utf8_that_is_not_utf8_is_an_error_with_its_line():
    data = "line one\nline two café\n".encode("latin-1")
    with pytest.raises(ExtractionError, match=r"invalid UTF-8 at line 2 .*declared as utf-8"):
        extract("notes.txt", data, declared_charset="utf-8")


def test_unknown_declared_encoding():
    with pytest.raises(ExtractionError, match="unknown encoding 'klingon'"):
        extract("notes.txt", b"hello", declared_charset="klingon")


def test_markdown_is_kept_as_text_with_its_heading_as_title():
    source = "Intro line\n\n# Coffee and hearts\n\nSome *emphasis* and a [link](http://x).\n"
    result = extract("readme.md", source.encode())
    assert result.text == source
    assert result.title == "Coffee and hearts"
    assert result.content_type == "text/markdown"


def test_html_keeps_only_visible_text():
    html = b"""<!doctype html><html><head><title>  Coffee
      study </title><style>p { color: red }</style>
      <script>var secret = "tracking";</script></head>
      <body><h1>Results</h1><p>First <b>bold</b> paragraph.</p><p>Second paragraph.</p>
      <script type="text/javascript">alert("x")</script><noscript>enable js</noscript>
      <ul><li>one</li><li>two</li></ul></body></html>"""
    result = extract("page.html", html)
    assert result.title == "Coffee study"
    assert result.text == "Results\nFirst bold paragraph.\nSecond paragraph.\none\ntwo"
    for hidden in ("secret", "tracking", "color", "alert", "enable js"):
        assert hidden not in result.text


def test_html_title_falls_back_to_h1():
    assert extract("page.htm", b"<html><body><h1>Main  heading</h1><p>x</p></body></html>").title == "Main heading"


def test_html_meta_charset_is_used():
    html = '<html><head><meta charset="iso-8859-1"></head><body><p>café crème</p></body></html>'.encode("latin-1")
    assert extract("page.html", html).text == "café crème"


def test_html_declaring_utf8_with_invalid_bytes_is_an_error():
    html = '<html><head><meta charset="utf-8"></head><body>\n<p>café</p></body></html>'.encode("latin-1")
    with pytest.raises(ExtractionError, match="invalid UTF-8 at line 2"):
        extract("page.html", html)


def test_pdf_text_and_title():
    result = extract("paper.pdf", make_pdf(["Hello page one", "Second (page)"], title="A Paper"))
    assert result.text == "Hello page one\n\nSecond (page)"
    assert result.title == "A Paper"
    assert result.content_type == "application/pdf"


def test_encrypted_pdf_is_rejected():
    with pytest.raises(ExtractionError, match="encrypted with a password"):
        extract("secret.pdf", make_pdf(["classified"], user_password="s3cret"))


def test_pdf_with_only_an_owner_password_opens():
    data = make_pdf(["printable text"], user_password="", owner_password="owner")
    assert extract("restricted.pdf", data).text == "printable text"


@pytest.mark.parametrize("data", [make_pdf(["some text"] * 3)[:400], b"%PDF-1.7\n garbage without objects"])
def test_broken_pdf_is_rejected(data):
    with pytest.raises(ExtractionError, match="the PDF is damaged and could not be read"):
        extract("broken.pdf", data)


def test_pdf_extension_on_something_else():
    with pytest.raises(ExtractionError, match="not a PDF file"):
        extract("fake.pdf", b"just some text pretending")


def test_pdf_without_a_text_layer():
    with pytest.raises(ExtractionError, match="no extractable text in its 1 page"):
        extract("scan.pdf", make_pdf([""]))


@pytest.mark.parametrize("name", ["image.txt", "image.md", "image.html"])
def test_binary_files_are_rejected(name):
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(range(256))
    with pytest.raises(ExtractionError, match="binary file"):
        extract(name, png)


@pytest.mark.parametrize("name", ["report.docx", "archive.zip", "README"])
def test_unsupported_file_types(name):
    with pytest.raises(ExtractionError, match=r"unsupported file type .*supported: .csv, .htm, .html"):
        extract(name, b"anything")


def test_empty_file():
    with pytest.raises(ExtractionError, match="the file is empty"):
        extract("empty.txt", b"")
