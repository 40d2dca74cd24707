"""Fetching a shared page against a real local HTTP server (no mocks): what is refused, what is retried."""

from __future__ import annotations

import gzip
import ipaddress
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from pipeline.demo import loopback_http_server
from pipeline.enrich.fetch import FetchFailed, FetchPolicy, FetchRefused, check_url, fetch_page, is_public
from pipeline.errors import PermanentError, RetryableError

PAGE = b"<html><head><title>Hi</title></head><body><p>Hello from the test server.</p></body></html>"
BOMB = gzip.compress(b"\0" * (10 * 1024 * 1024))
LOCAL = FetchPolicy(allow=("127.0.0.1/32",))


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
    assert error.reason == "blocked_address"
    assert "IMPROMPTU_FETCH_ALLOW" in str(error)


async def test_check_url_refuses_loopback_by_default(base_url: str) -> None:
    with pytest.raises(FetchRefused) as caught:
        await check_url(httpx.URL(f"{base_url}/page"), FetchPolicy())
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
    error = await refused(f"{base_url}/to-metadata")
    assert error.reason == "blocked_address"
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


async def test_gzip_bomb_stops_at_the_decoded_cap(base_url: str) -> None:
    assert len(BOMB) < 100_000  # on the wire it is small; only the decoded size is over the cap
    error = await refused(f"{base_url}/bomb", FetchPolicy(allow=LOCAL.allow, max_bytes=100_000))
    assert error.reason == "too_large"


async def test_pdf_is_not_html(base_url: str) -> None:
    error = await refused(f"{base_url}/pdf")
    assert error.reason == "not_html"


async def test_404_is_permanent(base_url: str) -> None:
    error = await refused(f"{base_url}/missing")
    assert error.reason == "http_404"


async def test_503_is_retryable(base_url: str) -> None:
    error = await failed(f"{base_url}/down")
    assert error.reason == "http_503"


async def test_stalled_body_times_out(base_url: str) -> None:
    started = time.monotonic()
    error = await failed(f"{base_url}/slow", FetchPolicy(allow=LOCAL.allow, timeout_seconds=0.5))
    assert error.reason == "timeout"
    assert time.monotonic() - started < 1.4  # gave up before the server finished sleeping


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1", "127.0.0.1", "169.254.169.254", "100.64.0.1", "::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1"],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


def test_public_address() -> None:
    assert is_public(ipaddress.ip_address("93.184.216.34"))
