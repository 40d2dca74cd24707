"""The approval pages and JSON API over HTTP (httpx on the ASGI app), against the real pipeline and nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI
from faststream.nats import NatsBroker
from pydantic import SecretStr
from structlog.testing import capture_logs

from pipeline import bus
from pipeline.actions.service import Approvals
from pipeline.domain.approval import get_record
from pipeline.domain.live_rules import LiveRules
from pipeline.settings import FacilitatorLogin, Settings
from pipeline.signing import sign
from pipeline.web.auth import hash_password, new_api_token
from pipeline.web.server import create_web_app
from tests.integration.bus_helpers import seed_proposal, wait_for_count

pytestmark = pytest.mark.nats

PASSWORDS = {"ana": "ana's long password", "ben": "ben's long password"}
TOKENS = {name: new_api_token() for name in PASSWORDS}
LOGINS = {
    name: FacilitatorLogin(password_hash=hash_password(PASSWORDS[name]), token_sha256=TOKENS[name][1])
    for name in PASSWORDS
}
WEBHOOK_SECRET = "webhook-secret-for-this-test"
CSRF = re.compile(r'name="csrftoken" value="([^"]+)"')


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name][0]}"}


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, html
    return found.group(1)


@pytest.fixture
def web_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"facilitator_logins": LOGINS, "webhook_secret": SecretStr(WEBHOOK_SECRET)})


@pytest.fixture
def web_app(web_settings: Settings, client: NatsBroker) -> FastAPI:
    approvals = Approvals(client, web_settings, LiveRules.load(web_settings.rules_file))
    return create_web_app(web_settings, client, approvals)


def browser(app: FastAPI) -> httpx.AsyncClient:
    """One person's client: its own cookie jar."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver", timeout=20)


@pytest.fixture
async def http(web_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with browser(web_app) as client:
        yield client


async def log_in(http: httpx.AsyncClient, name: str, password: str, next: str = "/proposals") -> httpx.Response:
    form = await http.get("/login", params={"next": next})
    assert form.status_code == 200
    data = {"csrftoken": csrf_of(form.text), "name": name, "password": password, "next": next}
    return await http.post("/login", data=data)


async def test_nothing_is_shown_or_done_without_a_login(http: httpx.AsyncClient) -> None:
    home = await http.get("/")
    queue = await http.get("/proposals", params={"show": "all"})
    detail = await http.get("/proposals/proposal-1")
    api = await http.get("/api/proposals")
    wrong_token = await http.get("/api/proposals", headers={"Authorization": "Bearer imp_not-a-token"})
    approve = await http.post("/api/proposals/proposal-1/approve")

    assert (home.status_code, home.headers["location"]) == (303, "/proposals")
    assert (queue.status_code, queue.headers["location"]) == (303, "/login?next=/proposals%3Fshow%3Dall")
    assert (detail.status_code, detail.headers["location"]) == (303, "/login?next=/proposals/proposal-1")
    for refused in (api, wrong_token, approve):
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"] == "Bearer"


async def test_a_wrong_password_or_unknown_name_gets_no_session(http: httpx.AsyncClient) -> None:
    with capture_logs() as logs:
        wrong = await log_in(http, "ana", "not ana's password")
        unknown = await log_in(http, "mallory", "ana's long password")
    after = await http.get("/proposals")

    assert wrong.status_code == unknown.status_code == 400
    assert "Wrong name or password." in wrong.text and "Wrong name or password." in unknown.text
    assert after.status_code == 303 and after.headers["location"].startswith("/login")
    failures = [e for e in logs if e["event"] == "web.login_failed"]
    assert [e["name"] for e in failures] == ["ana", "mallory"]
    assert "not ana's password" not in repr(logs) and "ana's long password" not in repr(logs)

    right = await log_in(http, "ana", PASSWORDS["ana"], next="/proposals?show=all")
    assert (right.status_code, right.headers["location"]) == (303, "/proposals?show=all")
    queue = await http.get("/proposals?show=all")
    assert queue.status_code == 200 and "Logged in as ana." in queue.text and "No proposals yet." in queue.text
    cookie = right.headers["set-cookie"].lower()
    assert "impromptu_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie


async def test_the_login_page_says_how_to_add_a_facilitator_when_there_is_none(
    settings: Settings, client: NatsBroker
) -> None:
    app = create_web_app(settings, client, Approvals(client, settings, LiveRules.load(settings.rules_file)))
    async with browser(app) as http:
        page = await http.get("/login")
        attempt = await http.post("/login", data={"csrftoken": csrf_of(page.text), "name": "ana", "password": "x"})
    assert "impromptu facilitators add NAME" in page.text
    assert attempt.status_code == 400


async def test_a_form_without_its_csrf_token_is_refused(
    pipeline: NatsBroker, client: NatsBroker, http: httpx.AsyncClient
) -> None:
    proposal = await seed_proposal(client)
    # Logging in needs the token too, even with no cookie at all (a login form posted from another site).
    async with browser(http._transport.app) as stranger:  # type: ignore[attr-defined]
        no_cookie = await stranger.post("/login", data={"name": "ana", "password": PASSWORDS["ana"]})
    assert no_cookie.status_code == 403 and "did not come from this site" in no_cookie.text

    assert (await log_in(http, "ana", PASSWORDS["ana"])).status_code == 303
    missing = await http.post(f"/proposals/{proposal.id}/approve", data={})
    forged = await http.post(f"/proposals/{proposal.id}/approve", data={"csrftoken": "forged"})
    as_json = await http.post(f"/proposals/{proposal.id}/approve", json={"csrftoken": "x"})
    logout = await http.post("/logout", data={})

    for refused in (missing, forged, as_json, logout):
        assert refused.status_code == 403, refused.text
    assert (await get_record(client, proposal.id)).state == "proposed"
    assert (await http.get("/proposals")).status_code == 200  # still logged in: the logout was refused too


async def test_pages_edit_approve_and_refuse_a_second_approval(
    pipeline: NatsBroker, client: NatsBroker, web_app: FastAPI
) -> None:
    proposal = await seed_proposal(client)
    async with browser(web_app) as ana, browser(web_app) as ben:
        assert (await log_in(ana, "ana", PASSWORDS["ana"])).status_code == 303
        assert (await log_in(ben, "ben", PASSWORDS["ben"], next=f"/proposals/{proposal.id}")).status_code == 303

        queue = await ana.get("/proposals")
        assert queue.status_code == 200
        assert proposal.id in queue.text and "Mark Britz" in queue.text and "proposed" in queue.text
        assert "Why eLearning Isn&#39;t Working" in queue.text  # escaped data, not markup

        page = await ana.get(f"/proposals/{proposal.id}")
        token = csrf_of(page.text)
        assert page.status_code == 200 and 'data-channel="x"' in page.text and "UTC" in page.text
        new_start = (proposal.starts_at + timedelta(minutes=15)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
        form = {
            "csrftoken": token,
            "channels_shown": "1",
            "title": proposal.title,
            "description": proposal.description,
            "starts_at": new_start,
            "duration_minutes": "45",
            "channels": ["x", "linkedin"],
        }
        saved = await ana.post(f"/proposals/{proposal.id}/edit", data=form)
        assert (saved.status_code, saved.headers["location"]) == (303, f"/proposals/{proposal.id}")
        after_edit = await ana.get(f"/proposals/{proposal.id}")
        assert "Saved: start (utc), duration, channels." in after_edit.text
        assert 'data-channel="facebook"' not in after_edit.text
        record = await get_record(client, proposal.id)
        assert record.proposal.starts_at.strftime("%Y-%m-%dT%H:%M") == new_start
        assert (record.proposal.duration_minutes, record.proposal.channels) == (45, ["linkedin", "x"])
        assert record.history[-1].by == "ana" and set(record.history[-1].changes) == {
            "starts_at",
            "duration_minutes",
            "channels",
        }

        past = {**form, "starts_at": "2020-01-01T10:00"}
        invalid = await ana.post(f"/proposals/{proposal.id}/edit", data=past)
        assert invalid.status_code == 422
        assert "in the past" in invalid.text and 'value="2020-01-01T10:00"' in invalid.text

        approved = await ana.post(f"/proposals/{proposal.id}/approve", data={"csrftoken": token})
        assert approved.status_code == 303
        ben_token = csrf_of((await ben.get(f"/proposals/{proposal.id}")).text)  # ben's own: tokens are per browser
        second = await ben.post(f"/proposals/{proposal.id}/approve", data={"csrftoken": ben_token})
        assert second.status_code == 409, second.text
        assert "already approved (by ana at" in second.text
        reject = await ben.post(f"/proposals/{proposal.id}/reject", data={"csrftoken": ben_token, "reason": " "})
        assert reject.status_code == 422 and "Say why it is rejected." in reject.text


async def test_the_start_is_shown_and_edited_in_the_rules_files_time_zone(
    pipeline: NatsBroker, client: NatsBroker, web_settings: Settings, tmp_path: Path
) -> None:
    """With `timezone: Europe/Berlin` in the rules file (and no host of its own), the form speaks Berlin time."""
    berlin_rules = tmp_path / "berlin.yaml"
    berlin_rules.write_text(web_settings.rules_file.read_text() + "\ntimezone: Europe/Berlin\n")
    app = create_web_app(web_settings, client, Approvals(client, web_settings, LiveRules.load(berlin_rules)))
    proposal = await seed_proposal(client)
    berlin = ZoneInfo("Europe/Berlin")
    async with browser(app) as ana:
        assert (await log_in(ana, "ana", PASSWORDS["ana"])).status_code == 303
        page = await ana.get(f"/proposals/{proposal.id}")
        assert '<span class="zone" id="starts_at-zone-label">Europe/Berlin</span>' in page.text
        assert f'value="{proposal.starts_at.astimezone(berlin):%Y-%m-%d %H:%M}"' in page.text

        moved = (proposal.starts_at + timedelta(minutes=25)).astimezone(berlin).replace(second=0, microsecond=0)
        form = {
            "csrftoken": csrf_of(page.text),
            "channels_shown": "1",
            "title": proposal.title,
            "description": proposal.description,
            "starts_at": f"{moved:%Y-%m-%d %H:%M}",  # Berlin wall-clock time, as typed
            "duration_minutes": str(proposal.duration_minutes),
            "channels": list(proposal.channels),
        }
        saved = await ana.post(f"/proposals/{proposal.id}/edit", data=form)
        assert saved.status_code == 303, saved.text
        record = await get_record(client, proposal.id)
        assert record.proposal.starts_at == moved.astimezone(UTC)  # stored in UTC: one or two hours earlier
        assert set(record.history[-1].changes) == {"starts_at"}  # the unchanged fields compared in Berlin time too

        garbage = await ana.post(f"/proposals/{proposal.id}/edit", data={**form, "starts_at": "next tuesday"})
        assert garbage.status_code == 422
        assert "is not a date and 24-hour time: YYYY-MM-DD HH:MM, Europe/Berlin time" in garbage.text


async def test_api_approves_by_token_and_of_two_at_once_exactly_one_wins(
    pipeline: NatsBroker, client: NatsBroker, http: httpx.AsyncClient
) -> None:
    proposal = await seed_proposal(client)

    listed = await http.get("/api/proposals", headers=bearer("ana"))
    detail = await http.get(f"/api/proposals/{proposal.id}", headers=bearer("ben"))
    unknown = await http.post("/api/proposals/proposal-nope/approve", headers=bearer("ana"))
    assert listed.status_code == 200 and [r["proposal"]["id"] for r in listed.json()] == [proposal.id]
    assert detail.status_code == 200
    assert {p["channel"] for p in detail.json()["previews"]} == set(proposal.channels)
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"

    outcomes = await asyncio.gather(
        http.post(f"/api/proposals/{proposal.id}/approve", headers=bearer("ana")),
        http.post(f"/api/proposals/{proposal.id}/approve", headers=bearer("ben")),
    )
    statuses = sorted(o.status_code for o in outcomes)
    assert statuses == [200, 409], [o.text for o in outcomes]
    (won,) = [o for o in outcomes if o.status_code == 200]
    (lost,) = [o for o in outcomes if o.status_code == 409]
    winner = won.json()["decided_by"]
    assert winner in ("ana", "ben") and won.json()["state"] == "approved"
    assert lost.json()["error"] == "refused" and f"already approved (by {winner} at" in lost.json()["detail"]
    await wait_for_count(client, bus.DECISIONS.subject, 1)


async def test_api_previews_read_as_posted_then_shows_what_each_channel_posted(
    pipeline: NatsBroker, client: NatsBroker, http: httpx.AsyncClient
) -> None:
    proposal = await seed_proposal(client)
    edited = await http.patch(f"/api/proposals/{proposal.id}", json={"channels": ["x", "slack"]}, headers=bearer("ana"))
    assert edited.status_code == 200, edited.text
    before = (await http.get(f"/api/proposals/{proposal.id}", headers=bearer("ana"))).json()
    previews = {p["channel"]: p for p in before["previews"]}
    assert previews["slack"]["text"].startswith("{") and "[Join the session] https://" in previews["slack"]["readable"]
    assert previews["x"]["readable"] is None  # plain text already
    assert before["announcements"] == []  # nothing posted before approval

    assert (await http.post(f"/api/proposals/{proposal.id}/approve", headers=bearer("ana"))).status_code == 200
    await wait_for_count(client, bus.OUTREACH_RESULTS.subject, 2)
    after = (await http.get(f"/api/proposals/{proposal.id}", headers=bearer("ana"))).json()
    posted = {(a["channel"], a["kind"]): a for a in after["announcements"]}
    assert set(posted) == {("slack", "scheduled"), ("x", "scheduled")}
    assert all(a["state"] == "posted" and a["location"] for a in posted.values())  # the dry run's outbox files


async def test_api_edit_with_a_past_time_is_422_with_the_fields_message(
    pipeline: NatsBroker, client: NatsBroker, http: httpx.AsyncClient
) -> None:
    proposal = await seed_proposal(client)
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()

    refused = await http.patch(f"/api/proposals/{proposal.id}", json={"starts_at": past}, headers=bearer("ana"))
    renamed = await http.patch(
        f"/api/proposals/{proposal.id}", json={"title": "Live: Bersin on soft skills"}, headers=bearer("ana")
    )
    rejected = await http.post(
        f"/api/proposals/{proposal.id}/reject", json={"reason": "  not   this week "}, headers=bearer("ben")
    )
    edit_after = await http.patch(f"/api/proposals/{proposal.id}", json={"title": "Again"}, headers=bearer("ana"))

    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["error"] == "invalid_edit" and "in the past" in body["problems"]["starts_at"]
    assert renamed.status_code == 200 and renamed.json()["proposal"]["title"] == "Live: Bersin on soft skills"
    assert renamed.json()["history"][-1]["changes"]["title"]["before"] == proposal.title
    assert rejected.status_code == 200 and (rejected.json()["state"], rejected.json()["reason"]) == (
        "rejected",
        "not this week",
    )
    assert edit_after.status_code == 409 and "already rejected" in edit_after.json()["detail"]


async def test_json_api_and_webhook_need_no_csrf_token_even_next_to_a_login_cookie(
    client: NatsBroker, http: httpx.AsyncClient, web_app: FastAPI
) -> None:
    assert (await log_in(http, "ana", PASSWORDS["ana"])).status_code == 303  # the jar now holds both cookies
    share = json.dumps({"url": "https://example.com/leadership", "by": "@britz", "id": "hook-web-1"}).encode()
    headers = {**sign(WEBHOOK_SECRET.encode(), str(int(time.time())), share), "content-type": "application/json"}

    webhook = await http.post("/shares", content=share, headers=headers)
    api = await http.post("/api/proposals/proposal-nope/reject", json={"reason": "x"}, headers=bearer("ana"))
    cookie_only = await http.post("/api/proposals/proposal-nope/reject", json={"reason": "x"})
    openapi = (await http.get("/openapi.json")).json()

    assert webhook.status_code == 202, webhook.text
    assert api.status_code == 404  # authenticated by the token, not stopped by CSRF
    assert cookie_only.status_code == 401  # the login cookie is not a credential for the API
    assert {"/api/proposals", "/api/proposals/{proposal_id}", "/api/proposals/{proposal_id}/approve"} <= set(
        openapi["paths"]
    )
    assert "/proposals" not in openapi["paths"]  # the HTML pages are not API


async def test_logins_added_and_removed_while_running_take_effect_at_the_next_request(
    settings: Settings, client: NatsBroker
) -> None:
    app = create_web_app(settings, client, Approvals(client, settings, LiveRules.load(settings.rules_file)))
    cli = str(Path(sys.executable).parent / "impromptu")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_")} | {
        "IMPROMPTU_DATA_DIR": str(settings.data_dir)
    }

    def facilitators(*args: str, stdin: str = "") -> None:
        done = subprocess.run([cli, "facilitators", *args], env=env, input=stdin, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    async with browser(app) as zoe:
        assert (await log_in(zoe, "zoe", "zoe's long password")).status_code == 400  # no such login yet
        await asyncio.to_thread(facilitators, "add", "zoe", "--password-stdin", stdin="zoe's long password\n")
        assert (await log_in(zoe, "zoe", "zoe's long password")).status_code == 303  # no restart needed
        assert (await zoe.get("/proposals")).status_code == 200
        await asyncio.to_thread(facilitators, "remove", "zoe")
        gone = await zoe.get("/proposals")
        assert (gone.status_code, gone.headers.get("location")) == (303, "/login?next=/proposals")


async def test_failed_logins_are_throttled_per_name_and_a_right_password_then_waits_too(web_app: FastAPI) -> None:
    async with browser(web_app) as guesser, browser(web_app) as ben:
        for attempt in range(5):
            assert (await log_in(guesser, "ana", f"guess number {attempt}")).status_code == 400
        blocked = await log_in(guesser, "ana", PASSWORDS["ana"])  # even the right password, for a while
        assert blocked.status_code == 429 and "Too many failed logins: try again in 15 min." in blocked.text
        assert 0 < int(blocked.headers["Retry-After"]) <= 15 * 60
        assert (await guesser.get("/proposals")).status_code == 303  # not logged in
        assert (await log_in(ben, "ben", PASSWORDS["ben"])).status_code == 303  # another name is not affected
