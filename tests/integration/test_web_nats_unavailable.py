"""When NATS times out or refuses, the approval API answers 503 with the reason and Retry-After, the pages a friendly
503 page: never a 500 with a traceback. Against the real nats-server, stopped under the web app, and with each
refusal nats-py raises in its place."""

from __future__ import annotations

import asyncio
import sys

import httpx
import nats.errors
import pytest
from fastapi import FastAPI
from faststream.nats import NatsBroker
from nats.js.errors import BadRequestError, ServiceUnavailableError
from structlog.testing import capture_logs

from pipeline import bus
from pipeline.actions.service import Approvals
from pipeline.cli import main
from pipeline.embedded import EmbeddedNats
from pipeline.ops import status as status_module
from pipeline.settings import Settings
from tests.integration.test_approval_web import PASSWORDS, bearer, browser, log_in, web_app, web_settings

pytestmark = pytest.mark.nats
__all__ = ["web_app", "web_settings"]  # fixtures shared with test_approval_web

REFUSALS = [
    nats.errors.TimeoutError(),
    nats.errors.NoRespondersError(),
    nats.errors.ConnectionClosedError(),
    BadRequestError(code=400, err_code=10026, description="maximum consumers limit reached"),
    ServiceUnavailableError(code=503, description="JetStream system temporarily unavailable"),
]


def assert_unavailable_json(answer: httpx.Response, says: str) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == str(bus.RETRY_AFTER_SECONDS)
    body = answer.json()
    assert body["error"] == "unavailable" and says in body["detail"], body
    assert "Traceback" not in answer.text


def assert_unavailable_page(answer: httpx.Response, says: str) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["retry-after"] == str(bus.RETRY_AFTER_SECONDS)
    assert "Try again in a moment" in answer.text and says in answer.text
    assert "Traceback" not in answer.text


async def test_with_nats_stopped_the_api_and_pages_answer_503_with_the_reason(
    web_app: FastAPI, client: NatsBroker, nats_server: EmbeddedNats, capfd: pytest.CaptureFixture[str]
) -> None:
    async with browser(web_app) as ana:
        assert (await log_in(ana, "ana", PASSWORDS["ana"])).status_code == 303  # logging in needs the bus
        nats_server.stop()
        try:
            with capture_logs() as logs:
                detail = await ana.post("/api/proposals/proposal-x/approve", headers=bearer("ana"))
                page = await ana.get("/proposals/proposal-x")
        finally:
            nats_server.start()
            async with asyncio.timeout(30):  # the client reconnects by itself (and can then be closed cleanly)
                while not await client.ping(timeout=1):
                    await asyncio.sleep(0.1)
    assert_unavailable_json(detail, "NATS did not answer")
    assert_unavailable_page(page, "NATS did not answer")
    warnings = [entry for entry in logs if entry["event"] == "web.nats_unavailable"]
    assert [(w["log_level"], w["path"]) for w in warnings] == [
        ("warning", "/api/proposals/proposal-x/approve"),
        ("warning", "/proposals/proposal-x"),
    ]
    assert not any("exc_info" in entry or entry["log_level"] == "error" for entry in logs)
    assert "Traceback" not in "".join(capfd.readouterr())


@pytest.mark.parametrize("error", REFUSALS, ids=lambda error: type(error).__name__)
async def test_each_refusal_of_nats_is_a_503_with_what_nats_said(
    web_app: FastAPI, monkeypatch: pytest.MonkeyPatch, error: Exception, client: NatsBroker
) -> None:
    async def refused(*args: object, **kwargs: object) -> None:
        raise error

    for step in ("get", "in_play", "recent", "listed", "approve"):
        monkeypatch.setattr(Approvals, step, refused)
    says = type(error).__name__
    async with browser(web_app) as ana:
        assert (await log_in(ana, "ana", PASSWORDS["ana"])).status_code == 303
        with capture_logs() as logs:
            answers = [
                await ana.get("/api/proposals", headers=bearer("ana")),
                await ana.get("/api/proposals/proposal-x", headers=bearer("ana")),
                await ana.post("/api/proposals/proposal-x/approve", headers=bearer("ana")),
            ]
            page = await ana.get("/proposals")
    for answer in answers:
        assert_unavailable_json(answer, says)
    assert_unavailable_page(page, says)
    if isinstance(error, BadRequestError):
        assert "err_code=10026" in answers[0].json()["detail"] and "maximum consumers" in answers[0].json()["detail"]
    assert [entry["event"] for entry in logs] == ["web.nats_unavailable"] * 4


@pytest.mark.parametrize(
    "error",
    [TimeoutError(), BadRequestError(code=400, err_code=10026, description="maximum consumers limit reached")],
    ids=["asyncio-timeout", "max-consumers"],
)
def test_a_command_whose_nats_call_fails_exits_1_with_the_reason_not_a_traceback(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: Exception
) -> None:
    async def refused(*args: object) -> None:
        raise error

    monkeypatch.setattr(status_module, "gather_status", refused)
    monkeypatch.setenv("NATS_URL", settings.nats_url or "")
    monkeypatch.setenv("IMPROMPTU_DATA_DIR", str(settings.data_dir))
    monkeypatch.setattr(sys, "argv", ["impromptu", "status"])
    with pytest.raises(SystemExit) as exited:
        main()
    said = capsys.readouterr().err
    assert exited.value.code == 1 and "Traceback" not in said
    assert said.startswith(f"error: {bus.not_answering_reason(error)}; try again")
