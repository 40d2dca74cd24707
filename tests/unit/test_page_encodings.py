"""Pages in legacy encodings and in decomposed Unicode, served as real bytes by a local HTTP server, fetched and read:
the encoding is chosen as browsers choose it (BOM, header, <meta> prescan, detector), and what the enrich stage
makes of a page (text, title, summary, key phrases, topics) is NFC."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from pipeline.demo import loopback_http_server
from pipeline.domain.rules import Rules
from pipeline.domain.scoring import Known
from pipeline.enrich.extract import Extraction, extract
from pipeline.enrich.stage import topic_scores
from pipeline.messages import Share
from pipeline.net.charset import charset_in_content, decode_html, encoding_of_label, prescan
from pipeline.net.fetch import FetchPolicy, Page, fetch_page

LOCAL = FetchPolicy(allow=("127.0.0.1/32",))
LINES = (Path(__file__).parent.parent / "fixtures" / "encodings" / "de-hoehere-leistung.txt").read_text().splitlines()


def german_page(head: str = "", text: list[str] = LINES) -> str:
    paragraphs = "".join(f"<p>{line}</p>" for line in text[1:])
    return (
        f'<!DOCTYPE html><html lang="de"><head>{head}<title>{text[0]}</title></head>'
        f"<body><article><h1>{text[0]}</h1>{paragraphs}</article></body></html>"
    )


FRENCH = "Le café où règne la crème brûlée, très élégant et près de la fenêtre. " * 3
NFD_TEXT = [unicodedata.normalize("NFD", line.replace("Kurze", "Geprüfte kurze")) for line in LINES]

# path -> (Content-Type header, body bytes)
PAGES: dict[str, tuple[str, bytes]] = {
    "/meta-charset": ("text/html", german_page('<meta charset="windows-1252">').encode("cp1252")),
    "/meta-latin1": ("text/html", german_page("<META CHARSET=ISO-8859-1>").encode("cp1252")),
    "/http-equiv": (
        "text/html",
        german_page('<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">').encode("cp1252"),
    ),
    # the header says windows-1252, the BOM says UTF-8: the BOM wins
    "/bom": ("text/html; charset=windows-1252", b"\xef\xbb\xbf" + german_page().encode("utf-8")),
    # the header says windows-1252, the page's <meta> says UTF-8: the header wins
    "/header-over-meta": ("text/html; charset=windows-1252", german_page('<meta charset="utf-8">').encode("cp1252")),
    "/undeclared": ("text/html", german_page().encode("cp1252")),
    "/undeclared-french": ("text/html", f"<html><body><p>{FRENCH}</p></body></html>".encode("cp1252")),
    "/nfd": ("text/html; charset=utf-8", german_page(text=NFD_TEXT).encode("utf-8")),
}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path not in PAGES:
            self.send_error(404)
            return
        content_type, body = PAGES[self.path]
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with loopback_http_server(Handler) as url:
        yield url


async def fetched(base_url: str, path: str) -> tuple[Page, Extraction]:
    page = await fetch_page(base_url + path, LOCAL)
    return page, extract(page.html, url=page.url, final_url=page.final_url)


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("/meta-charset", "meta"),
        ("/meta-latin1", "meta"),
        ("/http-equiv", "meta"),
        ("/bom", "bom"),
        ("/header-over-meta", "header"),
        ("/undeclared", "detected"),
    ],
)
async def test_a_german_page_is_read_in_its_own_encoding(base_url: str, path: str, source: str) -> None:
    page, extraction = await fetched(base_url, path)
    article = extraction.article
    assert (page.encoding, page.encoding_source) == ("utf-8" if source == "bom" else "windows-1252", source)
    assert "\ufffd" not in page.html
    assert "zu einer höheren Leistung" in extraction.text
    assert article.title == "Kurze Lernformate führen zu einer höheren Leistung"
    assert "höheren Leistung" in article.key_phrases
    assert "\ufffd" not in " ".join([extraction.text, article.title, article.summary, *article.key_phrases])


async def test_the_detector_prefers_windows_1252_when_it_reads_as_well(base_url: str) -> None:
    # charset-normalizer alone answers cp1250 here, and "crème" would become "crčme"
    page = await fetch_page(base_url + "/undeclared-french", LOCAL)
    assert page.encoding_source == "detected"
    assert "Le café où règne la crème brûlée" in page.html


def test_a_saved_page_given_as_bytes_is_sniffed_too() -> None:
    _, body = PAGES["/meta-charset"]
    extraction = extract(body, url="https://saved.invalid/a", final_url="https://saved.invalid/a")
    assert "zu einer höheren Leistung" in extraction.text
    assert "höheren Leistung" in extraction.article.key_phrases


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b'<meta charset="windows-1252">', "windows-1252"),
        (b"<meta charset=latin1>", "windows-1252"),
        (b"<meta charset='ascii'>", "windows-1252"),
        (b'<meta http-equiv="content-type" content="text/html;charset=koi8-r">', "koi8-r"),
        (b'<meta content="text/html; charset=koi8-r" http-equiv="Content-Type">', "koi8-r"),
        (b'<meta content="text/html; charset=koi8-r">', None),  # content without the pragma declares nothing
        (b'<meta charset="utf-16le">', "utf-8"),  # a page whose <meta> reads as ASCII is not UTF-16
        (b'<meta charset="x-no-such-thing">', None),
        (b'<meta charset="iso-2022-kr">', None),  # the "replacement" encoding: never decoded
        (b'<!-- <meta charset="koi8-r"> --><meta charset="gb2312">', "gbk"),
        (b'<div title="<meta charset=koi8-r>"><meta charset="shift_jis">', "shift_jis"),
        (b"<metadata charset=koi8-r><meta charset=euc-kr>", "euc-kr"),
        (b'<meta charset="koi8-r', None),  # cut off inside the tag
        (b" " * 1020 + b'<meta charset="koi8-r">', None),  # beyond the first 1024 bytes
    ],
)
def test_the_prescan_finds_what_browsers_find(head: bytes, expected: str | None) -> None:
    assert prescan(head[:1024]) == expected


def test_labels_map_as_the_encoding_standard_says() -> None:
    assert encoding_of_label(" ISO-8859-1 ") == encoding_of_label("us-ascii") == "windows-1252"
    assert encoding_of_label("sjis") == "shift_jis" and encoding_of_label("nope") is None
    assert charset_in_content(b'text/html; charset = "windows-1252"') == b"windows-1252"
    assert charset_in_content(b"text/html; charsetx=no; charset=utf-8;q") == b"utf-8"
    assert charset_in_content(b"text/html; charset='unclosed") is None


def test_the_header_and_bom_rules() -> None:
    body = '<meta charset="utf-8"><p>höheren</p>'.encode("cp1252")
    assert decode_html(body, "latin1").text.endswith("<p>höheren</p>")  # header wins over meta
    assert decode_html(body, "x-unknown").source == "meta"  # an unknown header label is skipped
    utf16 = "\ufeff<p>höheren</p>".encode("utf-16-le")
    assert decode_html(utf16, "windows-1252").text == "<p>höheren</p>"
    # windows-1252's unassigned bytes are C1 controls, as in browsers, not U+FFFD
    assert decode_html(b"<meta charset=cp1252>\x81\x80").text.endswith("\x81€")


async def test_decomposed_text_comes_out_nfc_and_matches_an_nfc_topic(base_url: str) -> None:
    assert "geprüft" not in PAGES["/nfd"][1].decode("utf-8")  # the page really is decomposed
    _, extraction = await fetched(base_url, "/nfd")
    article = extraction.article
    for text in (extraction.text, article.title, article.summary, *article.key_phrases):
        assert unicodedata.is_normalized("NFC", text), text
    assert article.title.startswith("Geprüfte kurze Lernformate")
    known = Known.of(
        Rules.model_validate({"topics": {"quality": ["geprüfte"], "pay": ["höheren leistung"]}, "rules": []})
    )
    assert set(topic_scores(known, article, extraction.text)) == {"quality", "pay"}


def test_a_decomposed_share_matches_an_nfc_topic_and_the_reverse() -> None:
    known = Known.of(
        Rules.model_validate(
            {"topics": {"quality": ["geprüft"], "cafe": [unicodedata.normalize("NFD", "café")]}, "rules": []}
        )
    )
    assert known.topics_in(unicodedata.normalize("NFD", "Alles Geprüft?")) == ["quality"]
    assert known.topics_in("Im Café") == ["cafe"]
    share = Share.from_source(
        source="x", native_id="1", sharer="@a", text=unicodedata.normalize("NFD", "geprüft"), url="https://a.example/"
    )
    assert known.topics_in(share.text) == ["quality"]
