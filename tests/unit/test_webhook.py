"""POST /shares: signed, validated, published once; refused with a reason otherwise. Against a real nats-server."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from faststream.nats import NatsBroker
from pydantic import SecretStr
from structlog.testing import capture_logs

from pipeline import bus, signing
from pipeline.app import new_broker
from pipeline.embedded import EmbeddedNats
from pipeline.messages import Share, stable_id
from pipeline.settings import Settings
from pipeline.web.server import create_web_app
from pipeline.web.shares import MAX_BODY_BYTES, SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests.integration.bus_helpers import models_on, subject_counts

pytestmark = pytest.mark.nats

SECRET = "s3cret-webhook-key-do-not-log"
BODY = {"url": "https://example.com/leadership", "by": "@britz", "text": "Bersin on leadership training"}


def encode(body: object) -> bytes:
    return json.dumps(body).encode()


def signed_headers(raw: bytes, secret: str = SECRET, age: float = 0) -> dict[str, str]:
    """Headers signing `raw` as sent `age` seconds ago."""
    timestamp = str(int(time.time() - age))
    return {**signing.sign(secret.encode(), timestamp, raw), "content-type": "application/json"}


def sign(secret: bytes, raw: bytes) -> str:
    """The X-Impromptu-Signature of `raw` signed now (with its timestamp in signed_headers)."""
    return signed_headers(raw, secret.decode())[SIGNATURE_HEADER]


def http_client(settings: Settings, broker: NatsBroker) -> httpx.AsyncClient:
    app = create_web_app(settings, broker)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://impromptu.test")


@pytest.fixture
def webhook_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_secret": SecretStr(SECRET)})


@pytest.fixture
async def http(webhook_settings: Settings, client: NatsBroker) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(webhook_settings, client) as http:
        yield http


async def post_signed(http: httpx.AsyncClient, body: object) -> httpx.Response:
    raw = encode(body)
    return await http.post("/shares", content=raw, headers=signed_headers(raw))


async def shares_on_bus(client: NatsBroker) -> int:
    return (await subject_counts(client)).get(bus.SHARES.subject, 0)


async def test_a_signed_share_is_published_once_however_often_it_is_posted(
    http: httpx.AsyncClient, client: NatsBroker
) -> None:
    first = await post_signed(http, BODY)
    again = await post_signed(http, BODY)

    assert first.status_code == again.status_code == 202
    expected_id = f"webhook:{stable_id('s', BODY['url'], BODY['by'])}"
    assert first.json() == {"id": expected_id, "duplicate": False, "seq": first.json()["seq"]}
    assert again.json() == {"id": expected_id, "duplicate": True, "seq": first.json()["seq"]}
    (share,) = await models_on(client, bus.SHARES.subject, Share)
    assert (share.id, share.source, share.sharer, share.url) == (expected_id, "webhook", "@britz", BODY["url"])
    assert share.text == BODY["text"]


async def test_every_field_of_the_body_reaches_the_share(http: httpx.AsyncClient, client: NatsBroker) -> None:
    body = {
        **BODY,
        "id": "post-42",
        "network": "mastodon",
        "shared_at": "2025-03-04T10:15:30+00:00",
        "is_reply": True,
        "is_repost": True,
        "language": "en",
    }
    response = await post_signed(http, body)

    assert response.status_code == 202, response.text
    (share,) = await models_on(client, bus.SHARES.subject, Share)
    assert share.id == "webhook:post-42"
    assert (share.network, share.is_reply, share.is_repost, share.language) == ("mastodon", True, True, "en")
    assert share.shared_at.isoformat() == "2025-03-04T10:15:30+00:00"


@pytest.mark.parametrize(
    "headers",
    [
        lambda: {},
        lambda: {SIGNATURE_HEADER: "sha256=" + "0" * 64},
        lambda: signed_headers(encode(BODY), "another key"),
        lambda: {SIGNATURE_HEADER: sign(SECRET.encode(), encode(BODY)).removeprefix("sha256=")},
        lambda: {SIGNATURE_HEADER: "sha256=\u00e9t\u00e9".encode("latin-1")},  # refused, not a crash in compare_digest
        lambda: {**signed_headers(encode(BODY)), TIMESTAMP_HEADER: str(int(time.time()) - 1)},  # the time is signed
    ],
    ids=["unsigned", "wrong-hex", "wrong-key", "no-prefix", "non-ascii", "other-timestamp"],
)
async def test_a_share_without_a_valid_signature_is_refused_401(
    http: httpx.AsyncClient, client: NatsBroker, headers: Callable[[], dict[str, str | bytes]]
) -> None:
    now = str(int(time.time()))
    response = await http.post("/shares", content=encode(BODY), headers={TIMESTAMP_HEADER: now, **headers()})

    assert response.status_code == 401
    assert response.json()["error"] == "bad_signature"
    assert response.json()["detail"]
    assert await shares_on_bus(client) == 0


async def test_the_signature_covers_the_raw_bytes_not_the_parsed_json(
    http: httpx.AsyncClient, client: NatsBroker
) -> None:
    signed = encode(BODY)
    same_json_other_bytes = json.dumps(BODY, indent=2).encode()

    response = await http.post("/shares", content=same_json_other_bytes, headers=signed_headers(signed))

    assert response.status_code == 401
    assert await shares_on_bus(client) == 0


async def test_without_a_secret_the_webhook_refuses_503_and_warns_once(settings: Settings, client: NatsBroker) -> None:
    with capture_logs() as logs:
        async with http_client(settings, client) as http:
            responses = [await post_signed(http, BODY) for _ in range(3)]

    assert [r.status_code for r in responses] == [503, 503, 503]
    assert responses[0].json()["error"] == "webhook_disabled"
    assert "IMPROMPTU_WEBHOOK_SECRET" in responses[0].json()["detail"]
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == ["webhook.disabled"]
    assert "IMPROMPTU_WEBHOOK_SECRET" in warnings[0]["reason"]
    assert await shares_on_bus(client) == 0


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"{not json", "<json>"),
        (b"[1, 2]", "<json>"),
        (encode({"by": "@britz"}), "url"),
        (encode({**BODY, "url": "ftp://example.com/x"}), "url"),
        (encode({"url": BODY["url"]}), "by"),
        (encode({**BODY, "network": "myspace"}), "network"),
        (encode({**BODY, "shared_at": "2025-03-04T10:15:30"}), "shared_at"),
        (encode({**BODY, "id": "has space"}), "id"),
        (encode({**BODY, "sharer": "@britz"}), "sharer"),
    ],
    ids=[
        "bad-json",
        "not-an-object",
        "no-url",
        "not-http",
        "no-by",
        "unknown-network",
        "naive-time",
        "bad-id",
        "extra",
    ],
)
async def test_a_malformed_body_is_refused_422_naming_the_field(
    http: httpx.AsyncClient, client: NatsBroker, raw: bytes, field: str
) -> None:
    response = await http.post("/shares", content=raw, headers=signed_headers(raw))

    assert response.status_code == 422
    assert response.json()["error"] == "invalid_body"
    problems = response.json()["detail"]
    assert field in [p["field"] for p in problems], problems
    assert all(p["message"] for p in problems)
    assert await shares_on_bus(client) == 0


async def test_every_problem_of_a_body_is_reported(http: httpx.AsyncClient) -> None:
    response = await post_signed(http, {"network": "myspace", "is_reply": "perhaps"})

    assert response.status_code == 422
    assert {p["field"] for p in response.json()["detail"]} == {"url", "by", "network", "is_reply"}


async def test_a_body_over_64_kib_is_refused_413_even_when_signed(http: httpx.AsyncClient, client: NatsBroker) -> None:
    raw = encode({**BODY, "text": "x" * MAX_BODY_BYTES})

    response = await http.post("/shares", content=raw, headers=signed_headers(raw))

    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert await shares_on_bus(client) == 0


async def test_a_streamed_body_without_content_length_is_cut_off_at_64_kib(http: httpx.AsyncClient) -> None:
    chunk = b"x" * 16 * 1024

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield chunk

    response = await http.post("/shares", content=endless(), headers={SIGNATURE_HEADER: "sha256=00"})

    assert response.status_code == 413


async def test_a_body_of_exactly_64_kib_is_read(http: httpx.AsyncClient, client: NatsBroker) -> None:
    raw = encode({**BODY, "text": ""})
    raw = raw[:-1] + b" " * (MAX_BODY_BYTES - len(raw)) + b"}"
    assert len(raw) == MAX_BODY_BYTES

    response = await http.post("/shares", content=raw, headers=signed_headers(raw))

    assert response.status_code == 202


async def test_when_the_broker_is_not_connected_the_share_is_refused_503(
    webhook_settings: Settings, nats_server: EmbeddedNats
) -> None:
    async with http_client(webhook_settings, new_broker(nats_server.url)) as http:
        response = await post_signed(http, BODY)

    assert response.status_code == 503
    assert response.json()["error"] == "bus_unavailable"


async def test_when_nats_goes_down_the_share_is_refused_503_not_500(
    webhook_settings: Settings, nats_server: EmbeddedNats
) -> None:
    broker = new_broker(nats_server.url)
    await broker.connect()
    try:
        async with http_client(webhook_settings, broker) as http:
            nats_server.stop()
            response = await post_signed(http, BODY)
    finally:
        with contextlib.suppress(OSError):  # drain would refuse (reconnecting); close may find the socket reset
            await broker.connection.close()

    assert response.status_code == 503
    assert response.json()["error"] == "bus_unavailable"


async def test_neither_the_secret_nor_a_signature_is_ever_logged_or_echoed(
    webhook_settings: Settings,
    client: NatsBroker,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    good = encode(BODY)
    signed = signed_headers(good)
    signature = signed[SIGNATURE_HEADER]
    bad = encode({"by": "@britz"})
    with capture_logs() as logs:
        async with http_client(webhook_settings, client) as http:
            responses = [
                await http.post("/shares", content=good, headers=signed_headers(good)),
                await http.post("/shares", content=good, headers={**signed, SIGNATURE_HEADER: signature[:-4] + "beef"}),
                await http.post("/shares", content=bad, headers=signed_headers(bad)),
                await http.post("/shares", content=b"x" * (MAX_BODY_BYTES + 1), headers=signed_headers(good)),
            ]

    assert [r.status_code for r in responses] == [202, 401, 422, 413]
    assert {e["event"] for e in logs} >= {"webhook.accepted", "webhook.refused"}
    captured = capsys.readouterr()
    everything = " ".join([repr(logs), caplog.text, captured.out, captured.err, *(r.text for r in responses)])
    assert SECRET not in everything
    assert signature.removeprefix("sha256=") not in everything
    assert signature[:-4] not in everything
    assert sign(SECRET.encode(), bad).removeprefix("sha256=") not in everything


# --- replays: the signed timestamp ---------------------------------------------------------------------------------


# a minute past the window into the future: the timestamp is cut to whole seconds when signed and the server reads
# its clock later, so one second past it can land back inside the window on a busy machine
@pytest.mark.parametrize("age", [301, 25 * 3600, -360], ids=["6-minutes-old", "a-day-old", "from-the-future"])
async def test_a_signed_share_out_of_its_time_is_refused_401(
    http: httpx.AsyncClient, client: NatsBroker, age: float
) -> None:
    raw = encode(BODY)

    response = await http.post("/shares", content=raw, headers=signed_headers(raw, age=age))

    assert response.status_code == 401
    assert response.json() == {"error": "bad_signature", "detail": response.json()["detail"]}
    assert "more than 300 s from now" in response.json()["detail"]
    assert await shares_on_bus(client) == 0


async def test_a_share_signed_four_minutes_ago_is_still_taken(http: httpx.AsyncClient) -> None:
    raw = encode(BODY)

    response = await http.post("/shares", content=raw, headers=signed_headers(raw, age=240))

    assert response.status_code == 202, response.text


def untimed_headers(raw: bytes) -> dict[str, str]:
    """The older form: the body alone signed, no timestamp (replayable at any time)."""
    return {SIGNATURE_HEADER: signing.sign_untimed(SECRET.encode(), raw), "content-type": "application/json"}


async def test_the_body_only_signature_is_refused_by_default(http: httpx.AsyncClient, client: NatsBroker) -> None:
    raw = encode(BODY)

    response = await http.post("/shares", content=raw, headers=untimed_headers(raw))

    assert response.status_code == 401
    assert TIMESTAMP_HEADER in response.json()["detail"]
    assert "IMPROMPTU_WEBHOOK_ALLOW_UNTIMED=true" in response.json()["detail"]
    assert await shares_on_bus(client) == 0


async def test_the_body_only_signature_is_taken_with_the_setting_and_logged(
    webhook_settings: Settings, client: NatsBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMPROMPTU_WEBHOOK_ALLOW_UNTIMED", "true")
    allowing = webhook_settings.model_copy(update={"webhook_allow_untimed": Settings().webhook_allow_untimed})
    raw = encode(BODY)
    with capture_logs() as logs:
        async with http_client(allowing, client) as http:
            untimed = await http.post("/shares", content=raw, headers=untimed_headers(raw))
            wrong = await http.post("/shares", content=raw, headers=untimed_headers(raw + b" "))
            stale = await http.post("/shares", content=raw, headers=signed_headers(raw, age=3600))

    assert untimed.status_code == 202, untimed.text
    assert wrong.status_code == 401  # the body-only form is still checked
    assert stale.status_code == 401  # a timestamp, when sent, is still checked
    assert "webhook.untimed" in [e["event"] for e in logs]
    assert await shares_on_bus(client) == 1
