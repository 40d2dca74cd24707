"""Hostile links and redirect chains against fetch_page: every one refused with its exact reason, none reaching the
"internal" server.

No internet is needed. A stub resolver answers for `*.test` names, and a stand-in network backend plays the
internet: it records every address the guard dials and carries the "public" addresses to a loopback server (the
article site), refusing any other non-loopback address. A second loopback server stands for what an attacker wants
to reach; it counts its hits.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler

import httpcore
import pytest
from structlog.testing import capture_logs

from pipeline.demo import loopback_http_server
from pipeline.net.fetch import (
    MAX_REDIRECTS,
    FetchFailed,
    FetchPolicy,
    FetchRefused,
    IPAddress,
    allow_rules,
    blocked_range,
    check_url,
    fetch_page,
    is_public,
    parse_allow_entry,
)

PUBLIC = "93.184.216.34"  # stands for the article site's address; the stand-in backend routes it to loopback
PUBLIC_PAGE = b"<html><body><p>The article.</p></body></html>"
SECRET = b"<html><body>internal admin</body></html>"


class StubResolver:
    """Answers from a table. `then` gives the answers of every later call, as a rebinding DNS server would."""

    def __init__(self, table: dict[str, list[str]], then: dict[str, list[str]] | None = None) -> None:
        self.table = table
        self.then = then or {}
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        answers = self.then if host in self.calls and host in self.then else self.table
        self.calls.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ipaddress.ip_address(a) for a in answers[host]]


def names(**extra: list[str]) -> dict[str, list[str]]:
    """The test world's DNS: article.test is public, the others point inside."""
    return {
        "article.test": [PUBLIC],
        "localhost.test": ["127.0.0.1"],
        "metadata.test": ["169.254.169.254"],
        **extra,
    }


class InternetStandIn(httpcore.AsyncNetworkBackend):
    """Dials for the guard: records each (address, port), sends routed public addresses to a loopback port, dials
    loopback for real (only an allow-list gets a fetch there), and treats anything else as unreachable."""

    def __init__(self, routes: dict[str, int]) -> None:
        self.routes = routes
        self.dialed: list[tuple[str, int]] = []
        self._real = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.dialed.append((host, port))
        if host in self.routes:
            host, port = "127.0.0.1", self.routes[host]
        elif not ipaddress.ip_address(host).is_loopback:
            raise httpcore.ConnectError(f"{host} is unreachable in tests")
        return await self._real.connect_tcp(host, port, timeout=timeout)

    async def sleep(self, seconds: float) -> None:
        await self._real.sleep(seconds)


class Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def answer(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class ArticleSite(Quiet):
    """The public site (reached as article.test): a page, and redirects wherever the query says."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path, _, query = self.path.partition("?")
        if path == "/page":
            self.answer(200, PUBLIC_PAGE)
        elif path == "/redirect":
            self.answer(302, Location=urllib.parse.parse_qs(query)["to"][0])
        elif path == "/loop":
            self.answer(302, Location="/loop")
        elif path.startswith("/chain/"):
            left = int(path.rsplit("/", 1)[1])
            self.answer(302, Location=f"/chain/{left - 1}" if left > 0 else "/page")
        else:
            self.answer(404)


class Internal(Quiet):
    """What an attacker wants: every request it gets is a failure of the guard."""

    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.hits.append(self.path)
        self.answer(200, SECRET)


@pytest.fixture(scope="module")
def site_port() -> Iterator[int]:
    with loopback_http_server(ArticleSite) as url:
        yield int(url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def internal_port() -> Iterator[int]:
    with loopback_http_server(Internal) as url:
        yield int(url.rsplit(":", 1)[1])


@pytest.fixture(autouse=True)
def nothing_reaches_inside() -> Iterator[None]:
    Internal.hits.clear()
    yield
    assert Internal.hits == [], "a hostile link reached the internal server"


@pytest.fixture
def internet(site_port: int) -> InternetStandIn:
    return InternetStandIn({PUBLIC: site_port})


def policy(resolver: StubResolver | None = None, allow: Sequence[str] = ()) -> FetchPolicy:
    return FetchPolicy(allow=tuple(allow), timeout_seconds=5.0, resolver=resolver or StubResolver(names()))


def via(target: str) -> str:
    """A link to the public site that redirects to `target`."""
    return "http://article.test/redirect?to=" + urllib.parse.quote(target, safe="")


async def refusal(url: str, internet: InternetStandIn, fetch_policy: FetchPolicy | None = None) -> FetchRefused:
    with pytest.raises(FetchRefused) as caught:
        await fetch_page(url, fetch_policy or policy(), network_backend=internet)
    return caught.value


# --- addresses a name may resolve to -----------------------------------------------------------------------------

BLOCKED_ADDRESSES = [
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "169.254.169.254",  # cloud metadata
    "169.254.0.1",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "192.0.0.8",
    "192.0.2.1",  # TEST-NET-1
    "198.18.0.1",
    "::",
    "::1",
    "fc00::1",
    "fd00:ec2::254",  # AWS metadata over IPv6
    "fe80::1",
    "fec0::1",
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::127.0.0.1",  # IPv4-compatible
    "::8.8.8.8",  # IPv4-compatible is deprecated whatever it embeds
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2002:c0a8:101::",  # 6to4 of 192.168.1.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::a00:1",  # local-use NAT64
    "2001:db8::1",
    "100::1",
]


@pytest.mark.parametrize("address", BLOCKED_ADDRESSES)
async def test_name_resolving_to_a_blocked_address_is_refused_before_dialing(
    address: str, internet: InternetStandIn
) -> None:
    error = await refusal("http://evil.test/", internet, policy(StubResolver(names(**{"evil.test": [address]}))))
    assert error.reason == "blocked_address"
    assert "IMPROMPTU_FETCH_ALLOW" in str(error)
    assert internet.dialed == []


@pytest.mark.parametrize(
    "address", [PUBLIC, "8.8.8.8", "2606:4700::1111", "::ffff:93.184.216.34", "64:ff9b::5db8:d822", "2002:5db8:d822::"]
)
def test_public_addresses_and_their_v6_forms_pass(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_the_refusal_names_the_range() -> None:
    assert blocked_range(ipaddress.ip_address("169.254.169.254")) == "link-local, where cloud metadata lives"
    assert blocked_range(ipaddress.ip_address("64:ff9b::7f00:1")) == "loopback, as NAT64"
    assert blocked_range(ipaddress.ip_address("2002:c0a8:101::")) == "private, as 6to4"


@pytest.mark.parametrize(
    "answer",
    [[PUBLIC, "127.0.0.1"], ["10.0.0.5", PUBLIC], ["2606:4700::1111", "::1"], [PUBLIC, "::ffff:169.254.169.254"]],
)
async def test_name_resolving_to_public_and_private_is_refused(answer: list[str], internet: InternetStandIn) -> None:
    error = await refusal("http://mixed.test/", internet, policy(StubResolver(names(**{"mixed.test": answer}))))
    assert error.reason == "blocked_address"
    assert internet.dialed == []


async def test_system_resolver_is_the_default_and_localhost_is_refused(internet: InternetStandIn) -> None:
    with pytest.raises(FetchRefused) as caught:
        await fetch_page("http://localhost/", FetchPolicy(), network_backend=internet)
    assert caught.value.reason == "blocked_address"
    assert internet.dialed == []


async def test_check_url_gives_the_same_verdict_without_fetching() -> None:
    with pytest.raises(FetchRefused) as caught:
        await check_url("http://metadata.test/latest/meta-data/", policy())
    assert caught.value.reason == "blocked_address"
    await check_url("http://article.test/page", policy())


# --- the URL's own form ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://2130706433/",  # decimal
        "http://0x7f000001/",  # hex
        "http://0177.0.0.1/",  # octal
        "http://127.1/",  # short form
        "http://0x7f.1/",
        "http://127.0.0.1./",  # trailing dot
        "http://00000127.0.0.1/",
        "http://127。0。0。1/",  # ideographic full stops, which IDNA maps to dots
        "http://0/",
        "http://0.0.0.0/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[fd00:ec2::254]/",
        "http://8.8.8.8/",  # even public: shared links name their host
    ],
)
async def test_literal_ip_hosts_are_refused(url: str, internet: InternetStandIn) -> None:
    error = await refusal(url, internet)
    assert error.reason == "literal_ip"
    assert internet.dialed == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.1:{port}/",
        "http://2130706433:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://127.0.0.1.:{port}/",
    ],
)
async def test_allow_list_admits_only_the_plain_spelling(
    url: str, internet: InternetStandIn, internal_port: int
) -> None:
    error = await refusal(url.format(port=internal_port), internet, policy(allow=["127.0.0.1/32"]))
    assert error.reason == "literal_ip"


@pytest.mark.parametrize(
    "url",
    [
        "http://good.com@127.0.0.1/",
        "http://user:pass@article.test/page",
        "http://article.test@evil.test/",
        "http://article.test\\@evil.test/",
        "http://127.0.0.1:80@article.test/page",
        "http://:@article.test/page",
    ],
)
async def test_userinfo_is_refused(url: str, internet: InternetStandIn) -> None:
    error = await refusal(url, internet)
    assert error.reason == "userinfo"
    assert internet.dialed == []


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
        "dict://127.0.0.1:11211/stats",
        "ftp://article.test/file",
        "javascript:alert(1)",
        "data:text/html,<h1>hi</h1>",
    ],
)
async def test_other_schemes_are_refused(url: str, internet: InternetStandIn) -> None:
    assert (await refusal(url, internet)).reason == "bad_scheme"


@pytest.mark.parametrize(
    "url",
    ["http:///page", "http://", "//article.test/page", "http://article.test:99999/", "http://a b.test/", "http://[::1"],
)
async def test_malformed_urls_are_refused(url: str, internet: InternetStandIn) -> None:
    assert (await refusal(url, internet)).reason == "bad_url"


# --- redirects from a public site ---------------------------------------------------------------------------------


async def test_public_site_is_fetched_through_the_checked_address(internet: InternetStandIn, site_port: int) -> None:
    page = await fetch_page("http://article.test/page", policy(), network_backend=internet)
    assert page.html == PUBLIC_PAGE.decode()
    assert internet.dialed == [(PUBLIC, 80)]  # the address, never the name: nothing left to resolve again


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://127.0.0.1:{internal}/", "literal_ip"),
        ("http://169.254.169.254/latest/meta-data/", "literal_ip"),
        ("http://0x7f000001:{internal}/", "literal_ip"),
        ("http://0177.0.0.1:{internal}/", "literal_ip"),
        ("http://[::1]:{internal}/", "literal_ip"),
        ("//127.0.0.1:{internal}/", "literal_ip"),  # scheme-relative
        ("http://localhost.test:{internal}/", "blocked_address"),
        ("http://metadata.test/latest/meta-data/", "blocked_address"),
        ("file:///etc/passwd", "bad_scheme"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", "bad_scheme"),
        ("http://good.com@127.0.0.1:{internal}/", "userinfo"),
        ("http://nowhere.test/", "dns_failed"),
    ],
)
async def test_redirect_into_the_network_is_refused(
    target: str, reason: str, internet: InternetStandIn, internal_port: int
) -> None:
    error = await refusal(via(target.format(internal=internal_port)), internet)
    assert error.reason == reason
    assert internet.dialed == [(PUBLIC, 80)]  # only the first hop was dialed


async def test_two_step_redirect_into_the_network_is_refused(internet: InternetStandIn, internal_port: int) -> None:
    error = await refusal(via(via(f"http://localhost.test:{internal_port}/admin")), internet)
    assert error.reason == "blocked_address"


@pytest.mark.parametrize(
    ("target", "reason"),
    [("http://127.0.0.1:{internal}/", "literal_ip"), ("http://localhost.test:{internal}/", "blocked_address")],
)
async def test_allow_listed_name_does_not_open_its_address(
    target: str, reason: str, internet: InternetStandIn, site_port: int, internal_port: int
) -> None:
    # the operator allowed one local test host by name; that does not open its address to other names or links
    local = policy(StubResolver(names(**{"article.test": ["127.0.0.1"]})), allow=["article.test"])
    page = await fetch_page(f"http://article.test:{site_port}/page", local, network_backend=internet)
    assert page.html == PUBLIC_PAGE.decode()
    target = urllib.parse.quote(target.format(internal=internal_port), safe="")
    error = await refusal(f"http://article.test:{site_port}/redirect?to={target}", internet, local)
    assert error.reason == reason


# --- ports in the allow-list ---------------------------------------------------------------------------------------

LOCAL_SITE = StubResolver(names(**{"article.test": ["127.0.0.1"]}))


@pytest.mark.parametrize(
    ("entry", "start", "target", "reason"),
    [
        ("127.0.0.1:{site}", "http://127.0.0.1:{site}", "http://127.0.0.1:{internal}/", "literal_ip"),
        ("127.0.0.0/8:{site}", "http://127.0.0.1:{site}", "http://127.0.0.1:{internal}/", "literal_ip"),
        ("127.0.0.1:{site}", "http://127.0.0.1:{site}", "http://localhost.test:{internal}/", "blocked_address"),
        ("article.test:{site}", "http://article.test:{site}", "http://article.test:{internal}/", "blocked_address"),
    ],
)
async def test_a_port_in_the_allow_list_opens_that_port_only(
    entry: str, start: str, target: str, reason: str, internet: InternetStandIn, site_port: int, internal_port: int
) -> None:
    # the demo's case: one local server allowed; a link or redirect to another port of the same host stays refused
    ports = {"site": site_port, "internal": internal_port}
    local = policy(LOCAL_SITE, allow=[entry.format(**ports)])
    page = await fetch_page(start.format(**ports) + "/page", local, network_backend=internet)
    assert page.html == PUBLIC_PAGE.decode()
    redirect = start.format(**ports) + "/redirect?to=" + urllib.parse.quote(target.format(**ports), safe="")
    error = await refusal(redirect, internet, local)
    assert error.reason == reason
    assert f"port {internal_port}" in str(error)
    error = await refusal(target.format(**ports), internet, local)  # and as the shared link itself
    assert error.reason == reason


async def test_an_entry_without_a_port_still_opens_every_port_and_says_so(
    internet: InternetStandIn, site_port: int, internal_port: int
) -> None:
    allow_rules.cache_clear()
    with capture_logs() as logs:
        wide = policy(allow=["127.0.0.1/32"])
    page = await fetch_page(f"http://127.0.0.1:{site_port}/page", wide, network_backend=internet)
    assert page.html == PUBLIC_PAGE.decode()
    await check_url(f"http://127.0.0.1:{internal_port}/", wide)  # compatibility: any port, as before
    [warning] = [e for e in logs if e["event"] == "fetch.allow_any_port"]
    assert warning["log_level"] == "warning"
    assert warning["entry"] == "127.0.0.1/32"
    assert "127.0.0.1:8080" in warning["hint"]
    with capture_logs() as again:
        policy(allow=["127.0.0.1/32"])
    assert again == []  # once per process, not once per fetch


@pytest.mark.parametrize(
    ("entry", "host", "network", "port"),
    [
        ("127.0.0.1:8080", None, "127.0.0.1/32", 8080),
        ("[::1]:8080", None, "::1/128", 8080),
        ("[fd00::/8]:443", None, "fd00::/8", 443),
        ("10.0.0.0/8:443", None, "10.0.0.0/8", 443),
        ("Wiki.Internal:8443", "wiki.internal", None, 8443),
        ("localhost", "localhost", None, None),
        ("::1", None, "::1/128", None),
        ("192.168.0.0/16", None, "192.168.0.0/16", None),
    ],
)
def test_allow_list_entries(entry: str, host: str | None, network: str | None, port: int | None) -> None:
    rule = parse_allow_entry(entry)
    assert (rule.host, rule.network, rule.port) == (
        host,
        ipaddress.ip_network(network) if network else None,
        port,
    )


IGNORED_ENTRIES = {
    "http://127.0.0.1:8080": "a URL, not a host",
    "127.1:8080": "never fetched",
    "0x7f000001": "never fetched",
    "127.0.0.1:http": "'http' is not a port",
    "localhost:0": "'0' is not a port",
    "localhost:65536": "'65536' is not a port",
    "10.0.0.0/33": "not an address or network",
    "*.internal": "no wildcards",
    "fe80::1:x": "in brackets",
    " ": "empty",
}


async def test_entries_that_match_nothing_are_ignored_with_a_warning(internet: InternetStandIn, site_port: int) -> None:
    allow_rules.cache_clear()
    entries = [*IGNORED_ENTRIES, f"127.0.0.1:{site_port}"]
    with capture_logs() as logs:
        checked = policy(allow=entries)
    ignored = {e["entry"]: e["reason"] for e in logs if e["event"] == "fetch.allow_ignored"}
    assert ignored.keys() == IGNORED_ENTRIES.keys()
    for entry, why in IGNORED_ENTRIES.items():
        assert why in ignored[entry], entry
    assert not [e for e in logs if e["event"] == "fetch.allow_any_port"]
    assert len(allow_rules(checked.allow)) == 1
    page = await fetch_page(f"http://127.0.0.1:{site_port}/page", checked, network_backend=internet)
    assert page.html == PUBLIC_PAGE.decode()  # the good entry still works


@pytest.mark.parametrize("hops", [MAX_REDIRECTS + 1, 10])
async def test_long_redirect_chain_is_refused(hops: int, internet: InternetStandIn) -> None:
    assert (await refusal(f"http://article.test/chain/{hops - 1}", internet)).reason == "too_many_redirects"


async def test_five_redirects_are_followed(internet: InternetStandIn) -> None:
    page = await fetch_page(f"http://article.test/chain/{MAX_REDIRECTS - 1}", policy(), network_backend=internet)
    assert page.final_url == "http://article.test/page"


async def test_redirect_loop_is_refused(internet: InternetStandIn) -> None:
    assert (await refusal("http://article.test/loop", internet)).reason == "too_many_redirects"


# --- DNS rebinding --------------------------------------------------------------------------------------------------


async def test_rebinding_after_the_check_does_not_reach_the_internal_server(
    internet: InternetStandIn, internal_port: int
) -> None:
    # public when checked, loopback on any later lookup: a client that resolved again to connect would hit Internal
    resolver = StubResolver(names(**{"rebind.test": [PUBLIC]}), then={"rebind.test": ["127.0.0.1"]})
    page = await fetch_page(f"http://rebind.test:{internal_port}/page", policy(resolver), network_backend=internet)
    assert page.html == PUBLIC_PAGE.decode()
    assert resolver.calls == ["rebind.test"]
    assert internet.dialed == [(PUBLIC, internal_port)]


async def test_rebinding_between_hops_is_caught_on_the_next_connect(
    internet: InternetStandIn, internal_port: int
) -> None:
    resolver = StubResolver(names(**{"rebind.test": [PUBLIC]}), then={"rebind.test": ["127.0.0.1"]})
    url = f"http://rebind.test:{internal_port}/chain/0"  # redirects to /page on the same name
    error = await refusal(url, internet, policy(resolver))
    assert error.reason == "blocked_address"
    assert resolver.calls == ["rebind.test", "rebind.test"]  # the server closed; the new connection was re-checked


async def test_unknown_name_is_refused(internet: InternetStandIn) -> None:
    assert (await refusal("http://nowhere.test/", internet)).reason == "dns_failed"


async def test_resolver_that_says_try_again_is_retryable(internet: InternetStandIn) -> None:
    async def flaky(host: str, port: int) -> list[IPAddress]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(FetchFailed) as caught:
        await fetch_page("http://article.test/", FetchPolicy(resolver=flaky), network_backend=internet)
    assert caught.value.reason == "dns_failed"
