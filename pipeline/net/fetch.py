"""Fetch a shared page without letting a stranger's link reach inside our network.

Design, in the order a fetch meets it:

1. The URL's form is checked on every hop (`check_url_form`): http/https only, no user:password@, a host that is a
   name; an IP address as host (in any spelling: `127.1`, `0x7f000001`, `2130706433`, `[::1]`) is refused unless
   the allow-list covers it, and odd spellings always are.
2. The address check happens where the socket is opened: `GuardedBackend` is the httpcore network backend under
   the one transport a fetch uses. Its `connect_tcp` resolves the host with `FetchPolicy.resolver`, refuses the host
   if ANY address is private, loopback, link-local, reserved, ... (also as IPv4-mapped, 6to4, NAT64 forms), and then
   dials the very address it checked. There is no second lookup for a rebinding DNS server to answer differently;
   TLS SNI, certificate checks and the Host header still use the name. Redirects are followed by hand, so each hop
   passes through 1 and 2 again; at most `MAX_REDIRECTS`.
3. One deadline covers the whole fetch (resolving, connecting, every hop, the body), besides httpx's per-read
   timeouts, so a server that trickles a byte a second still stops.
4. The body is decoded by us with zlib's `max_length`, so a gzip bomb never inflates past the cap, and both the
   declared length and the bytes on the wire are capped too.
5. Its text is decoded as browsers decode it (`charset.decode_html`: BOM, the header's charset, the `<meta>`
   prescan, then UTF-8 or a detector), so a page declaring windows-1252 only in a `<meta>` is not read as UTF-8.

Only the allow-list (`IMPROMPTU_FETCH_ALLOW`) admits a non-public address: that is how the demo and the tests reach
their loopback servers. An entry is a host name, an address or a CIDR, each optionally with a port (`127.0.0.1:8080`,
`[::1]:8080`, `10.0.0.0/8:443`, `wiki.internal:8443`); an entry without a port admits every port of its hosts, which
is logged at start (`fetch.allow_any_port`), and an entry that can match nothing is logged (`fetch.allow_ignored`)
and ignored. The port is checked on every hop, so a redirect to another port of an admitted host is refused.
Every refusal carries a short reason code (see `REASONS`).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
import ssl
import urllib.parse
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpcore
import httpx
import structlog

from pipeline.errors import PermanentError, RetryableError
from pipeline.net.charset import decode_html

log = structlog.get_logger("pipeline.enrich")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]

HTML_TYPES = ("text/html", "application/xhtml+xml")
MAX_REDIRECTS = 5
ALLOW_SETTING = "IMPROMPTU_FETCH_ALLOW"
HEADERS = {
    "User-Agent": "Impromptu/0.1 (+link preview for a learning session)",
    "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1",
    "Accept-Encoding": "gzip, deflate",  # only what CappedBody can inflate with a bound
}

# Reason codes, for operators and for the rules that weigh an EnrichmentFailed.
REASONS = {
    "bad_url": "not a fetchable absolute URL (no host, bad port, odd characters)",
    "bad_scheme": "not http or https (also on a redirect)",
    "userinfo": "user:password@ in the URL",
    "literal_ip": "an IP address instead of a host name, or an odd spelling of one",
    "blocked_address": "the host resolves to a non-public address",
    "dns_failed": "the host does not resolve (retryable when the resolver says 'try again')",
    "too_many_redirects": f"more than {MAX_REDIRECTS} redirects, or a loop",
    "too_large": "the body (declared, on the wire, or decoded) is over FetchPolicy.max_bytes",
    "bad_encoding": "a Content-Encoding other than gzip/deflate, or a corrupt compressed body",
    "not_html": "not an HTML or XHTML page",
    "http_<status>": "an HTTP error: 4xx (and unfollowed 3xx) refused, 429 and 5xx retryable",
    "timeout": "no answer within FetchPolicy.timeout_seconds (retryable)",
    "network": "connection refused, reset or broken (retryable)",
    "wrong_type": "a media download whose Content-Type the caller does not take",
    "truncated": "a media download that ended before its declared length (retryable)",
}


class FetchRefused(PermanentError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class FetchFailed(RetryableError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]


@dataclass(frozen=True)
class FetchPolicy:
    allow: tuple[str, ...] = ()  # IMPROMPTU_FETCH_ALLOW entries (see AllowRule): may be fetched although not public
    timeout_seconds: float = 10.0
    max_bytes: int = 5 * 1024 * 1024
    resolver: Resolver = field(default=system_resolver, compare=False, repr=False)  # tests pass a stub

    def __post_init__(self) -> None:
        allow_rules(self.allow)  # read (and warned about) once per process, when the first policy is made

    def allows(self, host: str, address: IPAddress, port: int) -> bool:
        return any(rule.admits(host, address, port) for rule in allow_rules(self.allow))


AllowNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
BRACKETED = re.compile(r"\[(?P<inside>[^\]]+)\](?::(?P<port>[^:]*))?")


@dataclass(frozen=True)
class AllowRule:
    """One allow-list entry: a host name (matched as written in the URL, whatever it resolves to) or a network,
    and a port (None: any port)."""

    entry: str
    host: str | None = None
    network: AllowNetwork | None = None
    port: int | None = None

    def admits(self, host: str, address: IPAddress, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.host is not None:
            return host == self.host
        assert self.network is not None
        return address.version == self.network.version and address in self.network


def parse_allow_entry(entry: str) -> AllowRule:
    """`entry` as a rule; ValueError says why it can match nothing."""
    text = entry.strip()
    if not text:
        raise ValueError("empty")
    if "://" in text or "@" in text or "?" in text or text.count("/") > 1:
        raise ValueError("a URL, not a host: write host, host:port, address:port or CIDR:port")
    if bracketed := BRACKETED.fullmatch(text):  # [::1], [::1]:8080, [fd00::/8]:443
        return AllowRule(entry, network=_network(bracketed["inside"]), port=_port(bracketed["port"]))
    try:  # an address or CIDR without a port; IPv6 ones need brackets to carry a port
        return AllowRule(entry, network=ipaddress.ip_network(text, strict=False))
    except ValueError:
        pass
    if text.count(":") > 1:
        raise ValueError("not an IPv6 address or network: write it in brackets to give a port ([::1]:8080)")
    name, _, port_text = text.partition(":")
    port = _port(port_text) if ":" in text else None
    if "/" in name or NUMERIC_LABEL.fullmatch(name.rstrip(".").rsplit(".", 1)[-1]):  # no top-level domain is numeric
        return AllowRule(entry, network=_network(name), port=port)  # 10.0.0.0/8:443, 127.0.0.1:8080
    host = name.lower()  # as httpx gives a URL's host
    if not HOST_NAME.fullmatch(host) or host.startswith(("-", ".")):
        raise ValueError("not a host name (letters, digits, '-', '.', '_'; no wildcards)")
    return AllowRule(entry, host=host, port=port)


def _network(text: str) -> AllowNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(
            "not an address or network (an address in a short, octal, hex or integer spelling is never fetched: "
            "write it as 127.0.0.1)"
        ) from None


def _port(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{text!r} is not a port (1 to 65535)")
    return int(text)


@functools.cache
def allow_rules(entries: tuple[str, ...]) -> tuple[AllowRule, ...]:
    """The rules of an allow-list, each problem logged once: entries that match nothing are ignored
    (`fetch.allow_ignored`), entries without a port admit every port (`fetch.allow_any_port`)."""
    rules = []
    for entry in entries:
        try:
            rule = parse_allow_entry(entry)
        except ValueError as error:
            log.warning("fetch.allow_ignored", entry=entry, reason=str(error), setting=ALLOW_SETTING)
            continue
        if rule.port is None:
            log.warning(
                "fetch.allow_any_port",
                entry=entry,
                reason="admits every port of these hosts, to shared links and their redirects",
                hint=f"name the port in {ALLOW_SETTING}: 127.0.0.1:8080, [::1]:8080, 10.0.0.0/8:443, host:8443",
            )
        rules.append(rule)
    return tuple(rules)


@dataclass(frozen=True)
class Page:
    url: str
    final_url: str
    status: int
    content_type: str
    html: str
    encoding: str = "utf-8"  # the WHATWG name of the encoding the body was decoded from
    encoding_source: str = "utf-8"  # what decided it: bom, header, meta, xml, utf-8, detected or default


# --- which addresses are public -------------------------------------------------------------------------------------

BLOCKED_NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(network), label)
    for network, label in [
        ("0.0.0.0/8", "'this network'"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local, where cloud metadata lives"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/32", "Teredo"),  # obsolete tunnel whose address embeds an (obfuscated) IPv4 client
        ("2001:db8::/32", "documentation"),
        ("fc00::/7", "unique local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    ]
)
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def embedded_ipv4(address: IPAddress) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address carries and forwards to, with the name of the form."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", address.ipv4_mapped
    if address in NAT64:
        return "NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    return None


def blocked_range(address: IPAddress) -> str | None:
    """Why `address` must not be fetched (the range's name), or None when it is public."""
    for network, label in BLOCKED_NETWORKS:
        if address.version == network.version and address in network:
            return label
    embedded = embedded_ipv4(address)
    if embedded is not None:
        form, inner = embedded
        inner_label = blocked_range(inner)
        return f"{inner_label}, as {form}" if inner_label else None
    if not address.is_global:  # whatever else IANA marks special, in this Python's table
        return "not globally routable"
    return None


def is_public(address: IPAddress) -> bool:
    return blocked_range(address) is None


# --- the URL's form -------------------------------------------------------------------------------------------------

NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+", re.IGNORECASE)
HOST_NAME = re.compile(r"[a-z0-9_.-]+")  # httpx has lowercased and IDNA-encoded it already


def literal_address(host: str) -> IPAddress | None:
    """The address an IP-literal host names; None for a host name.

    Spellings `ipaddress` does not accept but resolvers and browsers do (`127.1`, `0177.0.0.1`, `0x7f000001`,
    `2130706433`, `127.0.0.1.`) are refused here: no real link is written that way, and the allow-list must not be
    fooled by a second spelling of an address."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    last_label = host.rstrip(".").rsplit(".", 1)[-1]
    if NUMERIC_LABEL.fullmatch(last_label) or ":" in host:  # no top-level domain is numeric
        raise FetchRefused("literal_ip", f"{host} is an IP address in an unusual spelling")
    return None


def default_port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def parse_url(text: str, base: httpx.URL | None = None) -> httpx.URL:
    """`text` (absolute, or relative to `base` for a redirect's Location) as an httpx URL, or a refusal."""
    try:
        return base.join(text) if base is not None else httpx.URL(text.strip())
    except httpx.InvalidURL as error:
        # httpx rejects some IP spellings (0177.0.0.1); say what they are rather than just "bad URL"
        absolute = urllib.parse.urljoin(str(base), text) if base is not None else text.strip()
        try:
            host = urllib.parse.urlsplit(absolute).hostname
        except ValueError:
            host = None
        if host:
            literal_address(host)
        raise FetchRefused("bad_url", f"{text!r} is not a valid URL ({error})") from error


def check_url_form(url: httpx.URL, policy: FetchPolicy) -> None:
    """Everything about a URL that can be refused without resolving it."""
    if not url.scheme:
        raise FetchRefused("bad_url", f"{str(url)!r} is not an absolute URL")
    if url.scheme not in ("http", "https"):
        raise FetchRefused("bad_scheme", f"only http and https are fetched, not {url.scheme!r}")
    if url.userinfo:
        raise FetchRefused("userinfo", "URLs carrying user:password@ are refused")
    if not url.host:
        raise FetchRefused("bad_url", f"{url} has no host")
    if not 0 < default_port(url) < 65536:
        raise FetchRefused("bad_url", f"{url} has no valid port")
    address = literal_address(url.host)
    if address is not None:
        port = default_port(url)
        if not policy.allows(url.host, address, port):
            raise FetchRefused(
                "literal_ip",
                f"{url.host} (port {port}) is an IP address, not a host name (to fetch a local test server, "
                f"add it with its port to {ALLOW_SETTING})",
            )
        return
    if not HOST_NAME.fullmatch(url.host):
        raise FetchRefused("bad_url", f"{url.host!r} is not a host name")


# --- resolving and checking, at connect time ------------------------------------------------------------------------


async def resolve(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    try:
        addresses = list(dict.fromkeys(await resolver(host, port)))  # unique, in the resolver's order
    except socket.gaierror as error:
        if error.errno == socket.EAI_AGAIN:
            raise FetchFailed("dns_failed", f"cannot resolve {host} now: {error.strerror}") from error
        raise FetchRefused("dns_failed", f"cannot resolve {host}: {error.strerror}") from error
    except OSError as error:
        raise FetchFailed("dns_failed", f"cannot resolve {host}: {error}") from error
    if not addresses:
        raise FetchRefused("dns_failed", f"{host} has no address")
    return addresses


async def checked_addresses(host: str, port: int, policy: FetchPolicy) -> list[IPAddress]:
    """The addresses `host` may be reached at; refused if any of them is not public (and not allowed), since a
    client that tried them in another order would reach it."""
    literal = literal_address(host)
    addresses = [literal] if literal is not None else await resolve(host, port, policy.resolver)
    for address in addresses:
        blocked = blocked_range(address)
        if blocked and not policy.allows(host, address, port):
            raise FetchRefused(
                "blocked_address",
                f"{host} resolves to {address} ({blocked}), which is not a public address "
                f"(to fetch a local test server on port {port}, add it with its port to {ALLOW_SETTING})",
            )
    return addresses


async def check_url(url: httpx.URL | str, policy: FetchPolicy) -> None:
    """Refuse `url` as `fetch_page` would before connecting. A verdict for now only: `fetch_page` checks again
    at connect time, which is the check that counts."""
    parsed = parse_url(url) if isinstance(url, str) else url
    check_url_form(parsed, policy)
    await checked_addresses(parsed.host, default_port(parsed), policy)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """The only way a fetch opens a socket: resolve, check, and dial the address that was checked."""

    def __init__(self, policy: FetchPolicy, dialer: httpcore.AsyncNetworkBackend) -> None:
        self._policy = policy
        self._dialer = dialer

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: Exception | None = None
        for address in await checked_addresses(host, port, self._policy):
            try:
                return await self._dialer.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error  # try the next checked address, as a resolver-driven client would
        assert failure is not None  # checked_addresses never returns an empty list
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise FetchRefused("bad_url", "unix sockets are never fetched")

    async def sleep(self, seconds: float) -> None:
        await self._dialer.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (request mapping, error mapping), over a pool that connects through the guard."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        super().__init__(verify=shared_ssl_context(), trust_env=False)
        # httpx 0.28 has no parameter for the network backend; replace the pool it built (tests prove it is used)
        self._pool = httpcore.AsyncConnectionPool(ssl_context=shared_ssl_context(), network_backend=backend)


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One verifying TLS context for every fetch: building one loads the CA bundle, about 20 ms each time."""
    return httpx.create_ssl_context()


# --- fetching -------------------------------------------------------------------------------------------------------


async def fetch_page(
    url: str, policy: FetchPolicy, *, network_backend: httpcore.AsyncNetworkBackend | None = None
) -> Page:
    """GET `url` as an HTML page, following at most MAX_REDIRECTS checked redirects.

    `network_backend` dials the addresses the guard has checked (default: httpcore's anyio backend); tests pass
    one that records where it dialed. Raises FetchRefused (permanent) or FetchFailed (retryable)."""
    # the transport, not an httpx.AsyncClient: a client parses every Location itself (failing on some hostile ones
    # before we can classify them) and brings cookies, proxies and .netrc from the environment we do not want
    async with GuardedTransport(GuardedBackend(policy, network_backend or httpcore.AnyIOBackend())) as transport:
        try:
            async with asyncio.timeout(policy.timeout_seconds):
                return await _follow(url, policy, transport)
        except TimeoutError as error:
            raise FetchFailed("timeout", f"{url} took longer than {policy.timeout_seconds}s") from error


async def _follow(url: str, policy: FetchPolicy, transport: httpx.AsyncBaseTransport) -> Page:
    current = parse_url(url)
    timeouts = httpx.Timeout(policy.timeout_seconds).as_dict()
    for _hop in range(MAX_REDIRECTS + 1):
        check_url_form(current, policy)
        request = httpx.Request("GET", current, headers=HEADERS, extensions={"timeout": timeouts})
        try:
            response = await transport.handle_async_request(request)
            try:
                if not response.has_redirect_location:
                    return await _read(url, current, response, policy)
                location = response.headers["location"]
            finally:
                await response.aclose()
        except httpx.TimeoutException as error:
            raise FetchFailed("timeout", f"{current}: {type(error).__name__}") from error
        except httpx.TransportError as error:
            raise FetchFailed("network", f"{current}: {type(error).__name__} {error}") from error
        current = parse_url(location, base=current)
    raise FetchRefused("too_many_redirects", f"{url} redirected more than {MAX_REDIRECTS} times")


def _check_status(url: httpx.URL, status: int) -> None:
    if status == 429 or status >= 500:
        raise FetchFailed(f"http_{status}", f"{url} answered {status}")
    if status >= 300:  # 4xx, and 3xx that is not a redirect we can follow (304, no Location)
        raise FetchRefused(f"http_{status}", f"{url} answered {status}")


def _check_declared_length(url: httpx.URL, response: httpx.Response, max_bytes: int) -> None:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchRefused("too_large", f"{url} declares {declared} bytes, over the cap of {max_bytes}")


async def _read(url: str, current: httpx.URL, response: httpx.Response, policy: FetchPolicy) -> Page:
    _check_status(current, response.status_code)
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in HTML_TYPES:
        raise FetchRefused("not_html", f"{current} is {content_type or 'of no stated type'}, not an HTML page")
    _check_declared_length(current, response, policy.max_bytes)
    body = CappedBody(response.headers.get("content-encoding", ""), policy.max_bytes, current)
    async for raw in response.aiter_raw():  # raw: still compressed, so the cap is ours to enforce while inflating
        body.feed(raw)
    # off the event loop: decoding 5 MB, or the detector reading 256 KB, takes tens of milliseconds
    decoded = await asyncio.to_thread(decode_html, body.finish(), response.charset_encoding)
    return Page(
        url=url,
        final_url=str(current),
        status=response.status_code,
        content_type=content_type,
        html=decoded.text,
        encoding=decoded.encoding,
        encoding_source=decoded.source,
    )


class CappedBody:
    """A response body, inflated as it streams and refused once it passes `limit` bytes.

    zlib's `max_length` bounds every step, so a bomb costs at most `limit` + 1 bytes of memory before it is refused
    (httpx's own decoder inflates a whole network read at once: up to ~1000x of 64 KB)."""

    def __init__(self, content_encoding: str, limit: int, url: httpx.URL) -> None:
        self._limit = limit
        self._url = url
        self._coding = self._single_coding(content_encoding)
        self._inflater = self._new_inflater(self._coding)
        self._wire_bytes = 0
        self._body = bytearray()

    def _single_coding(self, content_encoding: str) -> str:
        codings = [c.strip() for c in content_encoding.lower().split(",") if c.strip() not in ("", "identity")]
        if not codings:
            return "identity"
        if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
            return codings[0]
        raise FetchRefused("bad_encoding", f"{self._url} is encoded as {content_encoding!r}; gzip or deflate only")

    @staticmethod
    def _new_inflater(coding: str, raw_deflate: bool = False) -> zlib._Decompress | None:
        if coding == "identity":
            return None
        if coding == "deflate":
            return zlib.decompressobj(-zlib.MAX_WBITS if raw_deflate else zlib.MAX_WBITS)
        return zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip header and trailer

    def feed(self, raw: bytes) -> None:
        first = self._wire_bytes == 0
        self._wire_bytes += len(raw)
        if self._wire_bytes > self._limit:
            self._too_large()
        if self._inflater is None:
            self._append(raw)
            return
        try:
            self._inflate(raw)
        except zlib.error as error:
            if first and self._coding == "deflate" and not self._body:
                self._inflate_as_raw_deflate(raw, error)
            else:
                raise FetchRefused("bad_encoding", f"{self._url} has a corrupt {self._coding} body") from error

    def _inflate_as_raw_deflate(self, raw: bytes, zlib_error: zlib.error) -> None:
        # "deflate" is zlib-wrapped by the standard but raw from some old servers: try that reading once
        self._inflater = self._new_inflater("deflate", raw_deflate=True)
        try:
            self._inflate(raw)
        except zlib.error:
            raise FetchRefused("bad_encoding", f"{self._url} has a corrupt deflate body") from zlib_error

    def _inflate(self, data: bytes) -> None:
        assert self._inflater is not None
        while data and not self._inflater.eof:  # after the end of the stream, trailing bytes are ignored
            self._append(self._inflater.decompress(data, self._limit - len(self._body) + 1))
            data = self._inflater.unconsumed_tail

    def _append(self, chunk: bytes) -> None:
        self._body.extend(chunk)
        if len(self._body) > self._limit:
            self._too_large()

    def _too_large(self) -> None:
        raise FetchRefused("too_large", f"{self._url} is larger than {self._limit} bytes")

    def finish(self) -> bytes:
        if self._inflater is not None and not self._inflater.eof:
            try:
                self._append(self._inflater.flush())  # a truncated stream: keep what arrived, as browsers do
            except zlib.error:
                pass
        return bytes(self._body)


# --- streaming media (recordings) -----------------------------------------------------------------------------------

MEDIA_CHUNK_BYTES = 1024 * 1024


@dataclass
class MediaStream:
    """An open download: its stated type and length, and its body as it arrives (never whole in memory)."""

    url: str
    final_url: str
    content_type: str
    size: int | None
    chunks: AsyncIterator[bytes]


@asynccontextmanager
async def stream_media(
    url: str,
    policy: FetchPolicy,
    *,
    accept: Callable[[str], bool],
    headers: Mapping[str, str] | None = None,
    network_backend: httpcore.AsyncNetworkBackend | None = None,
) -> AsyncIterator[MediaStream]:
    """GET `url` as a media file of a type `accept` takes, under the same address rules as `fetch_page`.

    Unlike a page, a recording may take long: `policy.timeout_seconds` bounds connecting and each read (a stalled
    server stops), not the whole download. `policy.max_bytes` is checked against Content-Length and counted while
    streaming. `headers` (an Authorization) are sent to the first host only: a redirect to another host (a CDN)
    goes without them. Raises FetchRefused (permanent) or FetchFailed (retryable), also while iterating."""
    backend = GuardedBackend(policy, network_backend or httpcore.AnyIOBackend())
    async with GuardedTransport(backend) as transport:
        try:
            # until the headers arrive, across every hop (resolving included): a server that never answers stops
            async with asyncio.timeout(policy.timeout_seconds * 3):
                response, current = await _open_media(url, policy, transport, dict(headers or {}))
        except TimeoutError as error:
            raise FetchFailed("timeout", f"{url} did not answer within {policy.timeout_seconds * 3:g}s") from error
        try:
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if not accept(content_type):
                raise FetchRefused("wrong_type", f"{current} is {content_type or 'of no stated type'}")
            coding = response.headers.get("content-encoding", "").strip().lower()
            if coding not in ("", "identity"):
                raise FetchRefused("bad_encoding", f"{current} is encoded as {coding!r}; media is read as is")
            _check_declared_length(current, response, policy.max_bytes)
            declared = response.headers.get("content-length", "")
            size = int(declared) if declared.isdigit() else None
            yield MediaStream(
                url=url,
                final_url=str(current),
                content_type=content_type,
                size=size,
                chunks=_media_chunks(response, current, policy.max_bytes, size),
            )
        finally:
            await response.aclose()


async def _open_media(
    url: str, policy: FetchPolicy, transport: httpx.AsyncBaseTransport, headers: dict[str, str]
) -> tuple[httpx.Response, httpx.URL]:
    current = parse_url(url)
    first_origin = (current.scheme, current.host, default_port(current))
    timeouts = httpx.Timeout(policy.timeout_seconds).as_dict()
    for _hop in range(MAX_REDIRECTS + 1):
        check_url_form(current, policy)
        same_origin = (current.scheme, current.host, default_port(current)) == first_origin
        sent = {"User-Agent": HEADERS["User-Agent"], "Accept": "*/*", "Accept-Encoding": "identity"}
        if same_origin:
            sent.update(headers)  # credentials only to the host they were given for
        request = httpx.Request("GET", current, headers=sent, extensions={"timeout": timeouts})
        try:
            response = await transport.handle_async_request(request)
        except httpx.TimeoutException as error:
            raise FetchFailed("timeout", f"{current}: {type(error).__name__}") from error
        except httpx.TransportError as error:
            raise FetchFailed("network", f"{current}: {type(error).__name__} {error}") from error
        if not response.has_redirect_location:
            try:
                _check_status(current, response.status_code)
            except BaseException:
                await response.aclose()
                raise
            return response, current
        location = response.headers["location"]
        await response.aclose()
        current = parse_url(location, base=current)
    raise FetchRefused("too_many_redirects", f"{url} redirected more than {MAX_REDIRECTS} times")


async def _media_chunks(
    response: httpx.Response, url: httpx.URL, max_bytes: int, declared: int | None
) -> AsyncIterator[bytes]:
    received = 0
    try:
        async for chunk in response.aiter_raw(MEDIA_CHUNK_BYTES):
            received += len(chunk)
            if received > max_bytes:
                raise FetchRefused("too_large", f"{url} is larger than {max_bytes} bytes")
            yield chunk
    except httpx.TimeoutException as error:
        raise FetchFailed("timeout", f"{url}: no data for a while after {received} bytes") from error
    except httpx.TransportError as error:
        raise FetchFailed("network", f"{url}: {type(error).__name__} after {received} bytes") from error
    if declared is not None and received != declared:
        raise FetchFailed("truncated", f"{url} sent {received} of the {declared} bytes it declared")
