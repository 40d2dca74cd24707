"""/metrics, /docs, /docs/asyncapi and /openapi.json name the bus and its internals: served to anyone only while the
server is reachable from this machine alone, else only to logins (an ops login's Bearer token for Prometheus).
/healthz and /readyz stay public and say nothing of the internals."""

from __future__ import annotations

import httpx
import pytest
from faststream.nats import NatsBroker

from pipeline import bus
from pipeline.actions.service import Approvals
from pipeline.domain.live_rules import LiveRules
from pipeline.settings import FacilitatorLogin, Settings
from pipeline.web.auth import hash_password, new_api_token
from pipeline.web.server import create_web_app, ops_endpoints_public
from tests.integration.test_approval_web import PASSWORDS, TOKENS, bearer, browser, log_in

pytestmark = pytest.mark.nats

OPS_TOKEN = new_api_token()
GUARDED = ["/metrics", "/docs/asyncapi", "/openapi.json", "/docs"]


def app_for(settings: Settings, client: NatsBroker, **update: object) -> httpx.AsyncClient:
    logins = {
        "ana": FacilitatorLogin(password_hash=hash_password(PASSWORDS["ana"]), token_sha256=TOKENS["ana"][1]),
        "olga": FacilitatorLogin(token_sha256=OPS_TOKEN[1], roles=["ops"]),
    }
    settings = settings.model_copy(update={"facilitator_logins": logins, **update})
    app = create_web_app(settings, client, Approvals(client, settings, LiveRules.load(settings.rules_file)))
    return browser(app)


def test_the_default_follows_who_can_reach_the_server(settings: Settings) -> None:
    def public(**update: object) -> bool:
        return ops_endpoints_public(settings.model_copy(update=update))

    assert public(http_host="127.0.0.1") and public(http_host="::1")
    assert not public(http_host="0.0.0.0") and not public(http_host="192.0.2.10")
    assert not public(http_host="127.0.0.1", public_url="https://learning.example.org")  # behind a proxy
    assert public(http_host="127.0.0.1", public_url="http://localhost:8000")
    assert public(http_host="0.0.0.0", ops_endpoints="public") and not public(ops_endpoints="login")


async def test_behind_a_login_the_ops_endpoints_refuse_strangers(settings: Settings, client: NatsBroker) -> None:
    async with app_for(settings, client, ops_endpoints="login") as http:
        stranger = {path: await http.get(path) for path in GUARDED}
        ops = {path: await http.get(path, headers={"Authorization": f"Bearer {OPS_TOKEN[0]}"}) for path in GUARDED}
        facilitator_metrics = await http.get("/metrics", headers=bearer("ana"))
        facilitator_openapi = await http.get("/openapi.json", headers=bearer("ana"))
        health = await http.get("/healthz")

    for path in ("/metrics", "/docs/asyncapi", "/openapi.json"):
        assert stranger[path].status_code == 401, (path, stranger[path].text)
        assert settings.nats_url not in stranger[path].text
    assert (stranger["/docs"].status_code, stranger["/docs"].headers["location"]) == (303, "/login?next=/docs")
    assert all(answer.status_code == 200 for answer in ops.values()), {p: a.status_code for p, a in ops.items()}
    assert settings.nats_url.removeprefix("nats://") in ops["/docs/asyncapi"].text  # what is kept from strangers
    assert facilitator_metrics.status_code == 403  # metrics are for ops logins
    assert facilitator_openapi.status_code == 200  # the API's documentation is for whoever uses the API
    assert (health.status_code, health.json()) == (200, {"status": "ok"})


async def test_readyz_names_what_is_missing_only_to_ops(settings: Settings) -> None:
    """A stage declared but not running: the consumer's name is for ops logins."""
    broker = NatsBroker(settings.nats_url)
    consumer = bus.stage_consumer(settings, "secret-consumer-name")
    broker.subscriber("impromptu.nowhere", **consumer)(lambda body: None)  # type: ignore[arg-type]
    await broker.connect()
    try:
        async with app_for(settings, broker, ops_endpoints="login") as http:
            stranger = await http.get("/readyz")
            ops = await http.get("/readyz", headers={"Authorization": f"Bearer {OPS_TOKEN[0]}"})
    finally:
        await broker.stop()
    assert (stranger.status_code, stranger.json()) == (503, {"status": "not ready", "missing": ["a stage"]})
    assert ops.status_code == 503 and ops.json()["missing"] == ["consumer secret-consumer-name: stage not running"]


async def test_a_browser_logged_in_reads_the_docs(settings: Settings, client: NatsBroker) -> None:
    async with app_for(settings, client, ops_endpoints="login") as http:
        assert (await log_in(http, "ana", PASSWORDS["ana"])).status_code == 303
        docs = await http.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_on_loopback_they_stay_public(settings: Settings, client: NatsBroker) -> None:
    async with app_for(settings, client) as http:
        answers = {path: (await http.get(path)).status_code for path in GUARDED}
    assert answers == dict.fromkeys(GUARDED, 200)
