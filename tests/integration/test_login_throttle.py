"""Failed logins counted on the bus: every worker serving the pages shares one count (real nats-server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import nats.errors
import pytest
from faststream.nats import NatsBroker
from structlog.testing import capture_logs

from pipeline import stores
from pipeline.actions.service import Approvals
from pipeline.app import connected
from pipeline.domain.live_rules import LiveRules
from pipeline.embedded import EmbeddedNats
from pipeline.settings import Settings
from pipeline.web.server import create_web_app, serve_http
from pipeline.web.throttle import PER_ADDRESS, PER_NAME, WINDOW_SECONDS, LoginThrottle, failure_key
from tests.integration import test_approval_web
from tests.integration.test_approval_web import PASSWORDS, browser, csrf_of, log_in

pytestmark = pytest.mark.nats

web_settings = test_approval_web.web_settings  # the same two logins


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_two_workers_share_one_count_per_name(web_settings: Settings, client: NatsBroker) -> None:
    async with connected(web_settings) as other_connection:
        worker_a = create_web_app(
            web_settings, client, Approvals(client, web_settings, LiveRules.load(web_settings.rules_file))
        )
        worker_b = create_web_app(
            web_settings,
            other_connection,
            Approvals(other_connection, web_settings, LiveRules.load(web_settings.rules_file)),
        )
        async with browser(worker_a) as on_a, browser(worker_b) as on_b:
            for attempt in range(3):
                assert (await log_in(on_a, "ana", f"guess {attempt}")).status_code == 400
            for attempt in range(2):
                assert (await log_in(on_b, "ana", f"guess {attempt + 3}")).status_code == 400
            for worker in (on_a, on_b):  # five failures in all: both workers refuse the sixth try
                refused = await log_in(worker, "ana", PASSWORDS["ana"])
                assert refused.status_code == 429, refused.text
                assert 0 < int(refused.headers["Retry-After"]) <= WINDOW_SECONDS
            assert (await log_in(on_b, "ben", PASSWORDS["ben"])).status_code == 303


async def test_failures_at_once_from_many_workers_are_all_counted(client: NatsBroker, settings: Settings) -> None:
    async with connected(settings) as second:
        throttles = [LoginThrottle(client), LoginThrottle(second)]
        failures = [throttles[i % 2].failed(f"name-{i}", "203.0.113.9") for i in range(PER_ADDRESS.allowed - 1)]
        await asyncio.gather(*failures)  # compare-and-set races between the two connections
        assert await throttles[0].refused_for("someone", "203.0.113.9") is None  # 19 of 20: still allowed
        await throttles[1].failed("name-last", "203.0.113.9")
        wait = await throttles[0].refused_for("someone", "203.0.113.9")
        assert wait is not None and WINDOW_SECONDS - 30 < wait <= WINDOW_SECONDS


async def test_workers_whose_clocks_differ_still_count_every_failure(client: NatsBroker) -> None:
    """Worker B's clock runs 5 s ahead of A's (two machines): to A, B's failures look a little in the future.
    They are failures all the same, and so is a failure racing A's read on another connection."""
    ahead = LoginThrottle(client, clock=lambda: time.time() + 5)
    behind = LoginThrottle(client)
    for _ in range(3):
        await ahead.failed("ana", "198.51.100.99")
    for _ in range(2):
        await behind.failed("ana", "198.51.100.99")
    assert await behind.refused_for("ana", "198.51.100.1") is not None  # 5 for the name, whoever counted them


async def test_the_window_moves_and_a_right_password_clears_the_name(client: NatsBroker) -> None:
    clock = Clock()
    throttle = LoginThrottle(client, clock=clock)
    for _ in range(PER_NAME.allowed):
        await throttle.failed("Ana", "198.51.100.1")
        clock.now += 60
    # the oldest failure was 5 minutes ago: it leaves the window in 10 minutes, then one more try is allowed
    assert await throttle.refused_for("ana", "198.51.100.7") == pytest.approx(WINDOW_SECONDS - 5 * 60)
    clock.now += WINDOW_SECONDS - 5 * 60 + 1
    assert await throttle.refused_for("ana", "198.51.100.7") is None
    await throttle.failed("ana", "198.51.100.7")  # four still in the window and this one: refused again
    assert await throttle.refused_for("ANA", "198.51.100.8") == pytest.approx(60.0 - 1)

    await throttle.forget("ana")
    assert await throttle.refused_for("ana", "198.51.100.7") is None
    await throttle.failed("ana", "198.51.100.7")  # a deleted key starts counting afresh
    assert await throttle.refused_for("ana", "198.51.100.7") is None


async def test_names_and_addresses_are_stored_only_as_digests(client: NatsBroker) -> None:
    await LoginThrottle(client).failed("ana@example.org", "192.0.2.44")
    kv = await stores.bucket(client, stores.LOGINS)
    keys = await kv.keys()
    assert sorted(keys) == sorted([failure_key(PER_NAME, "ana@example.org"), failure_key(PER_ADDRESS, "192.0.2.44")])
    for key in keys:
        entry = await kv.get(key)
        assert b"ana" not in (entry.value or b"") and b"192.0.2" not in (entry.value or b"")
    status = await kv.status()
    assert status.ttl == WINDOW_SECONDS  # nothing outlives the window


async def test_without_the_bus_logging_in_is_refused_with_a_reason_then_works_again(
    web_settings: Settings, client: NatsBroker, nats_server: EmbeddedNats
) -> None:
    app = create_web_app(web_settings, client, Approvals(client, web_settings, LiveRules.load(web_settings.rules_file)))
    async with browser(app) as ana:
        form = await ana.get("/login")
        data = {"csrftoken": csrf_of(form.text), "name": "ana", "password": PASSWORDS["ana"], "next": "/proposals"}
        nats_server.stop()
        with capture_logs() as logs:
            refused = await ana.post("/login", data=data)
        assert refused.status_code == 503
        assert "Logging in is unavailable: the bus does not answer." in refused.text
        assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == ["web.login_unavailable"]
        assert PASSWORDS["ana"] not in str(logs)

        nats_server.start()  # the client reconnects by itself: the same form then logs in
        async with asyncio.timeout(30):
            while (answer := await ana.post("/login", data=data)).status_code == 503:
                await asyncio.sleep(0.2)
        assert answer.status_code == 303 and answer.headers["location"] == "/proposals"


async def test_a_count_that_cannot_be_saved_leaves_the_answer_to_the_login_as_it_is(
    web_settings: Settings, client: NatsBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def bus_gone(*args: object) -> None:
        raise nats.errors.TimeoutError

    monkeypatch.setattr(LoginThrottle, "failed", bus_gone)
    monkeypatch.setattr(LoginThrottle, "forget", bus_gone)
    app = create_web_app(web_settings, client, Approvals(client, web_settings, LiveRules.load(web_settings.rules_file)))
    async with browser(app) as ana:
        with capture_logs() as logs:
            wrong = await log_in(ana, "ana", "not her password")
            right = await log_in(ana, "ana", PASSWORDS["ana"])
    assert (wrong.status_code, right.status_code) == (400, 303)  # still a wrong password; still logged in
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == ["web.login_count_unsaved"] * 2


async def guess(http: httpx.AsyncClient, name: str, forwarded_for: str) -> int:
    """One wrong password for `name`, the request claiming to come from `forwarded_for` (X-Forwarded-For)."""
    form = await http.get("/login")
    data = {"csrftoken": csrf_of(form.text), "name": name, "password": "a wrong guess", "next": "/proposals"}
    return (await http.post("/login", data=data, headers={"X-Forwarded-For": forwarded_for})).status_code


async def test_rotating_x_forwarded_for_from_an_untrusted_peer_is_still_throttled(
    web_settings: Settings, client: NatsBroker
) -> None:
    """A real server on loopback, as `make run` serves it: the peer is 127.0.0.1, which uvicorn by default trusts."""
    async with serving(web_settings, client) as base, httpx.AsyncClient(base_url=base, timeout=20) as guesser:
        answers = [await guess(guesser, f"name-{n}", f"198.51.100.{n}") for n in range(PER_ADDRESS.allowed + 5)]
    assert answers[: PER_ADDRESS.allowed] == [400] * PER_ADDRESS.allowed
    assert set(answers[PER_ADDRESS.allowed :]) == {429}  # one address, whatever the header says


async def test_a_trusted_proxys_x_forwarded_for_names_the_client(web_settings: Settings, client: NatsBroker) -> None:
    behind_proxy = web_settings.model_copy(update={"trusted_proxies": ["127.0.0.1/32"]})
    async with serving(behind_proxy, client) as base, httpx.AsyncClient(base_url=base, timeout=20) as proxy:
        answers = [await guess(proxy, f"name-{n}", "203.0.113.7") for n in range(PER_ADDRESS.allowed + 1)]
        another_client = await guess(proxy, "name-other", "203.0.113.8")
    assert answers[-1] == 429 and set(answers[:-1]) == {400}
    assert another_client == 400  # the proxy's other clients are not locked out with the guesser


@asynccontextmanager
async def serving(settings: Settings, client: NatsBroker) -> AsyncIterator[str]:
    app = create_web_app(settings, client, Approvals(client, settings, LiveRules.load(settings.rules_file)))
    ready = asyncio.Event()
    server = asyncio.create_task(serve_http(settings, app, ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield f"http://{settings.http_host}:{settings.http_port}"
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
