"""Fetch a shared page without letting a stranger's link reach inside our network.

Every hop is resolved and checked before it is requested; the body is capped while streaming; every refusal
carries a short reason code an operator can act on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import httpx

from pipeline.errors import PermanentError, RetryableError

HTML_TYPES = ("text/html", "application/xhtml+xml")
MAX_REDIRECTS = 5


class FetchRefused(PermanentError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class FetchFailed(RetryableError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class FetchPolicy:
    allow: tuple[str, ...] = ()  # hosts or CIDRs that may be fetched although not public
    timeout_seconds: float = 10.0
    max_bytes: int = 5 * 1024 * 1024

    def allows(self, host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        for entry in self.allow:
            if entry == host:
                return True
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        return False


@dataclass(frozen=True)
class Page:
    url: str
    final_url: str
    status: int
    content_type: str
    html: str


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)
    return address.is_global and not address.is_multicast


async def _resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise FetchRefused("dns_failed", f"cannot resolve {host}: {error.strerror}") from error
    return [ipaddress.ip_address(info[4][0]) for info in infos]


async def check_url(url: httpx.URL, policy: FetchPolicy) -> None:
    if url.scheme not in ("http", "https"):
        raise FetchRefused("bad_scheme", f"only http and https are fetched, not {url.scheme!r}")
    if url.userinfo:
        raise FetchRefused("userinfo", "URLs carrying user:password@ are refused")
    if not url.host:
        raise FetchRefused("no_host", f"{url} has no host")
    for address in await _resolve(url.host, url.port or (443 if url.scheme == "https" else 80)):
        if not is_public(address) and not policy.allows(url.host, address):
            raise FetchRefused(
                "blocked_address",
                f"{url.host} resolves to {address}, which is not a public address "
                "(to fetch a local test server, add it to IMPROMPTU_FETCH_ALLOW)",
            )


async def fetch_page(url: str, policy: FetchPolicy, client: httpx.AsyncClient | None = None) -> Page:
    owned = client is None
    client = client or httpx.AsyncClient(
        follow_redirects=False,
        timeout=httpx.Timeout(policy.timeout_seconds),
        headers={"User-Agent": "Impromptu/0.1 (+link preview for a learning session)"},
    )
    try:
        async with asyncio.timeout(policy.timeout_seconds):
            return await _follow(url, policy, client)
    except TimeoutError as error:
        raise FetchFailed("timeout", f"{url} took longer than {policy.timeout_seconds}s") from error
    finally:
        if owned:
            await client.aclose()


async def _follow(url: str, policy: FetchPolicy, client: httpx.AsyncClient) -> Page:
    current = httpx.URL(url)
    for _hop in range(MAX_REDIRECTS + 1):
        await check_url(current, policy)
        try:
            async with client.stream("GET", current) as response:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    current = current.join(location)
                    continue
                return await _read(url, current, response, policy)
        except httpx.TimeoutException as error:
            raise FetchFailed("timeout", f"{current}: {type(error).__name__}") from error
        except httpx.TransportError as error:
            raise FetchFailed("network", f"{current}: {error}") from error
    raise FetchRefused("too_many_redirects", f"{url} redirected more than {MAX_REDIRECTS} times")


async def _read(url: str, current: httpx.URL, response: httpx.Response, policy: FetchPolicy) -> Page:
    if response.status_code == 429 or response.status_code >= 500:
        raise FetchFailed(f"http_{response.status_code}", f"{current} answered {response.status_code}")
    if response.status_code >= 400:
        raise FetchRefused(f"http_{response.status_code}", f"{current} answered {response.status_code}")
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in HTML_TYPES:
        raise FetchRefused("not_html", f"{current} is {content_type or 'of no stated type'}, not an HTML page")
    body = bytearray()
    async for chunk in response.aiter_bytes():  # decoded: a gzip bomb stops at the cap too
        body.extend(chunk)
        if len(body) > policy.max_bytes:
            raise FetchRefused("too_large", f"{current} is larger than {policy.max_bytes} bytes")
    try:
        html = bytes(body).decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        html = bytes(body).decode("utf-8", errors="replace")
    return Page(url=url, final_url=str(current), status=response.status_code, content_type=content_type, html=html)
