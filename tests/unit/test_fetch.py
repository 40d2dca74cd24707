"""Fetching a shared page against a real local HTTP server (no mocks): what is refused, what is retried, and what
hostile servers (bombs, endless bodies, slow-loris, junk) get. The SSRF suite is in test_ssrf.py."""

from __future__ import annotations

import gzip
import ipaddress
import random
import socket
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from pipeline.demo import loopback_http_server
from pipeline.errors import PermanentError, RetryableError
from pipeline.net.fetch import (
    CappedBody,
    FetchFailed,
    FetchPolicy,
    FetchRefused,
    IPAddress,
    check_url,
    fetch_page,
    is_public,
)

PAGE = b"<html><head><title>Hi</title></head><body><p>Hello from the test server.</p></body></html>"
BOMB = gzip.compress(b"\0" * (10 * 1024 * 1024))
DEFLATE_BOMB = zlib.compress(b"\0" * (10 * 1024 * 1024))
JUNK = random.Random(5).randbytes(20_000)
LOCAL = FetchPolicy(allow=("127.0.0.1/32",))
SMALL = FetchPolicy(allow=LOCAL.allow, max_bytes=100_000)
QUICK = FetchPolicy(allow=LOCAL.allow, timeout_seconds=1.0)


async def loopback(host: str, port: int) -> list[IPAddress]:
    """A resolver for which every name is this machine."""
    return [ipaddress.ip_address("127.0.0.1")]


def trickle(handler: BaseHTTPRequestHandler, first: bytes, every: float, rounds: int) -> None:
    """Write `first`, then one byte every `every` seconds, until the client hangs up."""
    try:
        handler.wfile.write(first)
        handler.wfile.flush()
        for _ in range(rounds):
            time.sleep(every)
            handler.wfile.write(b"x")
            handler.wfile.flush()
    except OSError:  # the client gave up, as it should
        pass


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def send(
        self, status: int, body: bytes = b"", content_type: str = "text/html; charset=utf-8", **headers: str
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path
        if path == "/page":
            self.send(200, PAGE)
        elif path == "/hop":
            self.send(302, Location="/page")
        elif path == "/to-metadata":
            self.send(302, Location="http://169.254.169.254/latest/meta-data/")
        elif path.startswith("/chain/"):
            left = int(path.rsplit("/", 1)[1])
            self.send(302, Location=f"/chain/{left - 1}" if left > 0 else "/page")
        elif path == "/big":
            self.send(200, b"<html><body>" + b"a" * 5000 + b"</body></html>")
        elif path == "/bomb":
            self.send(200, BOMB, Content_Encoding="gzip")
        elif path == "/deflate-bomb":
            self.send(200, DEFLATE_BOMB, Content_Encoding="deflate")
        elif path == "/gzip-page":
            self.send(200, gzip.compress(PAGE), Content_Encoding="gzip")
        elif path == "/deflate-page":
            self.send(200, zlib.compress(PAGE), Content_Encoding="deflate")
        elif path == "/raw-deflate-page":
            raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            self.send(200, raw.compress(PAGE) + raw.flush(), Content_Encoding="deflate")
        elif path == "/corrupt-gzip":
            self.send(200, b"\x1f\x8b\x08\x00garbage-not-gzip" * 10, Content_Encoding="gzip")
        elif path == "/brotli":
            self.send(200, b"\x0b\x02\x80hi\x03", Content_Encoding="br")
        elif path == "/latin1":
            self.send(200, "<p>café</p>".encode("latin-1"), content_type="text/html; charset=iso-8859-1")
        elif path == "/xhtml":
            self.send(200, PAGE, content_type="application/xhtml+xml")
        elif path == "/junk":
            self.send(200, JUNK)
        elif path == "/declares-huge":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(10 * 1024**3))
            self.end_headers()
            trickle(self, b"<html>", every=0.2, rounds=50)
        elif path == "/endless-chunked":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"%x\r\n%s\r\n" % (65536, b"a" * 65536)
            try:
                for _ in range(10_000):  # 640 MB if nobody stops reading
                    self.wfile.write(chunk)
            except OSError:
                pass
        elif path == "/slow-loris":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n")  # no length: read to close
            trickle(self, b"<html>", every=0.2, rounds=50)
        elif path == "/silent":
            time.sleep(2)  # accepts the connection, never answers (within the 1 s timeout)
        elif path == "/busy":
            self.send(429, b"slow down")
        elif path == "/not-modified":
            self.send(304)
        elif path == "/pdf":
            self.send(200, b"%PDF-1.4", content_type="application/pdf")
        elif path == "/missing":
            self.send(404, b"not here")
        elif path == "/down":
            self.send(503, b"try later")
        elif path == "/slow":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.flush()
            time.sleep(1.5)
            try:
                self.wfile.write(b"x" * 100)
            except OSError:
                pass
        else:
            self.send(404)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with loopback_http_server(Handler) as url:
        yield url


async def refused(url: str, policy: FetchPolicy = LOCAL) -> FetchRefused:
    with pytest.raises(FetchRefused) as caught:
        await fetch_page(url, policy)
    return caught.value


async def failed(url: str, policy: FetchPolicy = LOCAL) -> FetchFailed:
    with pytest.raises(FetchFailed) as caught:
        await fetch_page(url, policy)
    return caught.value


def test_error_kinds() -> None:
    assert issubclass(FetchRefused, PermanentError)
    assert issubclass(FetchFailed, RetryableError)


async def test_local_server_refused_by_default(base_url: str) -> None:
    error = await refused(f"{base_url}/page", FetchPolicy())
    assert error.reason == "literal_ip"
    assert "IMPROMPTU_FETCH_ALLOW" in str(error)


async def test_local_server_by_name_refused_by_default(base_url: str) -> None:
    port = httpx.URL(base_url).port
    error = await refused(f"http://local.test:{port}/page", FetchPolicy(resolver=loopback))
    assert error.reason == "blocked_address"
    assert str(error).startswith("blocked_address: local.test resolves to 127.0.0.1 (loopback)")
    assert "IMPROMPTU_FETCH_ALLOW" in str(error)


async def test_local_server_allowed_by_name(base_url: str) -> None:
    port = httpx.URL(base_url).port
    page = await fetch_page(f"http://local.test:{port}/page", FetchPolicy(allow=("local.test",), resolver=loopback))
    assert page.html == PAGE.decode()


async def test_check_url_refuses_loopback_by_default(base_url: str) -> None:
    with pytest.raises(FetchRefused) as caught:
        await check_url(httpx.URL(f"{base_url}/page"), FetchPolicy())
    assert caught.value.reason == "literal_ip"
    with pytest.raises(FetchRefused) as caught:
        await check_url(f"http://local.test:{httpx.URL(base_url).port}/page", FetchPolicy(resolver=loopback))
    assert caught.value.reason == "blocked_address"


async def test_allowed_local_server_returns_the_html(base_url: str) -> None:
    page = await fetch_page(f"{base_url}/page", LOCAL)
    assert page.html == PAGE.decode()
    assert page.status == 200
    assert page.content_type == "text/html"
    assert page.final_url == f"{base_url}/page"


async def test_allow_by_host_name(base_url: str) -> None:
    await check_url(httpx.URL(f"{base_url}/page"), FetchPolicy(allow=("127.0.0.1",)))


async def test_redirect_is_followed_and_final_url_recorded(base_url: str) -> None:
    page = await fetch_page(f"{base_url}/hop", LOCAL)
    assert page.url == f"{base_url}/hop"
    assert page.final_url == f"{base_url}/page"


@pytest.mark.parametrize("url", ["ftp://example.com/file", "file:///etc/passwd"])
async def test_non_http_scheme_refused(url: str) -> None:
    error = await refused(url)
    assert error.reason == "bad_scheme"


async def test_userinfo_refused() -> None:
    error = await refused("http://user:pw@example.com/")
    assert error.reason == "userinfo"


async def test_redirect_hop_to_metadata_address_is_rechecked(base_url: str) -> None:
    error = await refused(f"{base_url}/to-metadata")  # the allow-list admits 127.0.0.1, not where it redirects
    assert error.reason == "literal_ip"
    assert "169.254.169.254" in str(error)


async def test_five_redirects_are_followed(base_url: str) -> None:
    page = await fetch_page(f"{base_url}/chain/4", LOCAL)  # /chain/4 .. /chain/0 -> /page: five redirects
    assert page.final_url == f"{base_url}/page"


async def test_more_than_five_redirects_refused(base_url: str) -> None:
    error = await refused(f"{base_url}/chain/5")  # six redirects
    assert error.reason == "too_many_redirects"


async def test_body_over_max_bytes_refused(base_url: str) -> None:
    error = await refused(f"{base_url}/big", FetchPolicy(allow=LOCAL.allow, max_bytes=1000))
    assert error.reason == "too_large"


@pytest.mark.parametrize("path", ["/bomb", "/deflate-bomb"])
async def test_compression_bomb_stops_at_the_decoded_cap(base_url: str, path: str) -> None:
    assert len(BOMB) < 100_000 and len(DEFLATE_BOMB) < 100_000  # small on the wire; only decoded over the cap
    started = time.monotonic()
    error = await refused(f"{base_url}{path}", SMALL)
    assert error.reason == "too_large"
    assert time.monotonic() - started < 2


def test_bomb_never_inflates_much_past_the_cap() -> None:
    body = CappedBody("gzip", 50_000, httpx.URL("http://article.test/"))
    with pytest.raises(FetchRefused) as caught:
        body.feed(BOMB)  # about 10 KB on the wire, 10 MB inflated
    assert caught.value.reason == "too_large"
    assert len(body._body) == 50_001  # zlib's max_length stopped it one byte over, not at 10 MB


async def test_declared_length_over_the_cap_is_refused_before_reading(base_url: str) -> None:
    started = time.monotonic()
    error = await refused(f"{base_url}/declares-huge")
    assert error.reason == "too_large"
    assert "declares" in str(error)
    assert time.monotonic() - started < 1  # did not wait for the trickle


async def test_endless_chunked_body_is_cut_at_the_cap(base_url: str) -> None:
    started = time.monotonic()
    error = await refused(f"{base_url}/endless-chunked", SMALL)
    assert error.reason == "too_large"
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("path", ["/gzip-page", "/deflate-page", "/raw-deflate-page"])
async def test_compressed_pages_are_decoded(base_url: str, path: str) -> None:
    assert (await fetch_page(f"{base_url}{path}", LOCAL)).html == PAGE.decode()


@pytest.mark.parametrize("path", ["/corrupt-gzip", "/brotli"])
async def test_unreadable_encoding_is_refused(base_url: str, path: str) -> None:
    assert (await refused(f"{base_url}{path}")).reason == "bad_encoding"


async def test_charset_from_the_header(base_url: str) -> None:
    assert (await fetch_page(f"{base_url}/latin1", LOCAL)).html == "<p>café</p>"


async def test_xhtml_is_html(base_url: str) -> None:
    assert (await fetch_page(f"{base_url}/xhtml", LOCAL)).content_type == "application/xhtml+xml"


async def test_binary_junk_labelled_html_does_not_crash(base_url: str) -> None:
    page = await fetch_page(f"{base_url}/junk", LOCAL)
    assert page.status == 200
    assert len(page.html) > 1000  # undecodable bytes became U+FFFD; extraction decides what it is worth


async def test_pdf_is_not_html(base_url: str) -> None:
    error = await refused(f"{base_url}/pdf")
    assert error.reason == "not_html"


async def test_404_is_permanent(base_url: str) -> None:
    error = await refused(f"{base_url}/missing")
    assert error.reason == "http_404"


async def test_503_is_retryable(base_url: str) -> None:
    error = await failed(f"{base_url}/down")
    assert error.reason == "http_503"


async def test_429_is_retryable(base_url: str) -> None:
    assert (await failed(f"{base_url}/busy")).reason == "http_429"


async def test_3xx_without_a_location_is_refused(base_url: str) -> None:
    assert (await refused(f"{base_url}/not-modified")).reason == "http_304"


async def test_stalled_body_times_out(base_url: str) -> None:
    started = time.monotonic()
    error = await failed(f"{base_url}/slow", FetchPolicy(allow=LOCAL.allow, timeout_seconds=0.5))
    assert error.reason == "timeout"
    assert time.monotonic() - started < 1.4  # gave up before the server finished sleeping


async def test_slow_loris_hits_the_total_deadline(base_url: str) -> None:
    # a byte every 0.2 s never trips the read timeout; only the deadline over the whole fetch stops it
    started = time.monotonic()
    error = await failed(f"{base_url}/slow-loris", QUICK)
    assert error.reason == "timeout"
    assert time.monotonic() - started < 3


async def test_server_that_never_answers_times_out(base_url: str) -> None:
    started = time.monotonic()
    error = await failed(f"{base_url}/silent", QUICK)
    assert error.reason == "timeout"
    assert time.monotonic() - started < 3


async def test_closed_port_is_a_retryable_network_failure() -> None:
    with socket.socket() as probe:  # a port nobody listens on: bind, note it, close
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert (await failed(f"http://127.0.0.1:{port}/page")).reason == "network"


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1", "127.0.0.1", "169.254.169.254", "100.64.0.1", "::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1"],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


def test_public_address() -> None:
    assert is_public(ipaddress.ip_address("93.184.216.34"))
