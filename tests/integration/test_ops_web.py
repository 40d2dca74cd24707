"""The ops page over HTTP (httpx on the ASGI app) against the real nats-server: roles, counts, backlog, dead letters."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import nats.errors
import pytest
from fastapi import FastAPI
from faststream.nats import NatsBroker

from pipeline import bus, stores
from pipeline.actions import actions_router
from pipeline.actions.service import Approvals
from pipeline.app import create_broker, new_broker, start_stages
from pipeline.archive import archive_router
from pipeline.channels.records import PostRecord
from pipeline.demo import ASSETS, article_server, run_story
from pipeline.domain.live_rules import LiveRules
from pipeline.enrich.stage import enrich_router
from pipeline.errors import PermanentError
from pipeline.messages import AnnouncementDue, EnrichmentFailed, Share, utc_now
from pipeline.ops.dlq import get_dead_letter
from pipeline.outreach import health
from pipeline.outreach.stage import outreach_router
from pipeline.settings import FacilitatorLogin, Settings
from pipeline.stage import StageRouter
from pipeline.triggers.stage import trigger_router
from pipeline.web import ops as ops_web
from pipeline.web.auth import hash_password, new_api_token
from pipeline.web.ops import FLOW, INTERNAL, stage_inputs, stage_outputs
from pipeline.web.server import create_web_app
from tests.integration.bus_helpers import models_on, subject_counts, wait_for_count, wait_until
from tests.integration.test_approval_web import csrf_of
from tests.unit.conftest import make_content, make_session

pytestmark = pytest.mark.nats

PROBE = bus.Topic("impromptu.probe", Share)
PASSWORDS = {"olga": "olga's long password", "fay": "fay's long password", "bo": "bo's long password"}
ROLES = {"olga": ["ops"], "fay": ["facilitator"], "bo": ["facilitator", "ops"]}
TOKENS = {name: new_api_token() for name in PASSWORDS}
LOGINS = {
    name: FacilitatorLogin(
        password_hash=hash_password(PASSWORDS[name]),
        token_sha256=TOKENS[name][1],
        roles=ROLES[name],  # type: ignore[arg-type]
    )
    for name in PASSWORDS
}
FIELDS = ("in", "out", "backlog", "redelivered", "dead-letters")


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name][0]}"}


def stage_numbers(html: str) -> dict[str, dict[str, int]]:
    """Each stage box's numbers, read from the page as a person sees them (data-count is the same number)."""
    numbers: dict[str, dict[str, int]] = {}
    for chunk in html.split('data-stage="')[1:]:
        name = chunk.split('"', 1)[0]
        numbers[name] = {
            field: int(re.search(rf'<dd class="{field}" data-count="(\d+)">(\d+)', chunk).group(2))  # type: ignore[union-attr]
            for field in FIELDS
        }
    return numbers


def waiting_seq(html: str) -> int:
    found = re.search(r'<li class="card dead-letter" data-seq="(\d+)" data-state="waiting">', html)
    assert found, html
    return int(found.group(1))


def worker_of(html: str, stage: str) -> str:
    chunk = html.split(f'data-stage="{stage}"', 1)[1]
    return re.search(r'<dd class="worker">([^<]*)</dd>', chunk).group(1)  # type: ignore[union-attr]


@pytest.fixture
def web_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"facilitator_logins": LOGINS})


@pytest.fixture
def web_app(web_settings: Settings, client: NatsBroker) -> FastAPI:
    return create_web_app(
        web_settings, client, Approvals(client, web_settings, LiveRules.load(web_settings.rules_file))
    )


def browser(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver", timeout=20)


@asynccontextmanager
async def logged_in(app: FastAPI, name: str, next: str = "/ops") -> AsyncIterator[httpx.AsyncClient]:
    async with browser(app) as http:
        form = await http.get("/login", params={"next": next})
        data = {"csrftoken": csrf_of(form.text), "name": name, "password": PASSWORDS[name], "next": next}
        done = await http.post("/login", data=data)
        assert done.status_code == 303, done.text
        yield http


@pytest.fixture
async def olga(web_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An ops-only login."""
    async with logged_in(web_app, "olga") as http:
        yield http


class Probe:
    """A stage that refuses every message (a poison message) until `fixed`."""

    def __init__(self) -> None:
        self.fixed = False
        self.handled: list[str] = []

    async def handle(self, message: Share) -> None:
        if not self.fixed:
            raise PermanentError("cannot handle example.com links yet")
        self.handled.append(message.id)


@asynccontextmanager
async def probe_stage(settings: Settings) -> AsyncIterator[Probe]:
    """The probe stage running on its own broker, with the pipeline's delivery rules (it dead-letters at once)."""
    stage = Probe()
    router = StageRouter("probe", settings)
    router.consume(PROBE)(stage.handle)
    broker = new_broker(settings.nats_url or "")
    broker.include_router(router)
    await start_stages(broker, settings)
    try:
        yield stage
    finally:
        await broker.stop()


@pytest.fixture
async def probe(settings: Settings) -> AsyncIterator[Probe]:
    async with probe_stage(settings) as stage:
        yield stage


async def poison(client: NatsBroker, n: int) -> None:
    share = Share.from_source(source="cli", native_id=str(n), sharer="@britz", url=f"https://example.com/{n}")
    await bus.publish(client, PROBE, share)
    await wait_for_count(client, bus.dead_letter_subject("probe"), n)


def test_the_flow_says_what_the_stage_routers_really_consume_and_publish(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    live = LiveRules.load(settings.rules_file)
    routers = [
        trigger_router(settings, live),
        enrich_router(settings, live),
        actions_router(settings, live),
        outreach_router(settings),
        archive_router(settings),
    ]
    assert [r.stage_name for r in routers] == list(FLOW)
    for router in routers:
        published = {p.subject.broker_address for p in router.publishers} - {bus.dead_letter_subject(router.stage_name)}
        consumed = {s.subject.broker_address for s in router.subscribers}
        assert set(FLOW[router.stage_name]) == published, router.stage_name
        internal = set(INTERNAL.get(router.stage_name, ()))
        assert set(stage_inputs(router.stage_name)) == consumed - internal, router.stage_name
        assert internal <= consumed & published  # a hand-off within the stage really is one


async def test_login_and_roles_are_required(web_app: FastAPI) -> None:
    async with browser(web_app) as stranger:
        page = await stranger.get("/ops")
        detail = await stranger.get("/ops/dead-letters/1")
        as_json = await stranger.get("/ops/status.json")
        wrong_token = await stranger.get("/ops/status.json", headers={"Authorization": "Bearer imp_nope"})
    assert (page.status_code, page.headers["location"]) == (303, "/login?next=/ops")
    assert (detail.status_code, detail.headers["location"]) == (303, "/login?next=/ops/dead-letters/1")
    assert as_json.status_code == wrong_token.status_code == 401

    async with logged_in(web_app, "fay", next="/proposals") as fay:
        refused = await fay.get("/ops")
        refused_json = await fay.get("/ops/status.json")
        assert (await fay.get("/proposals")).status_code == 200
    assert refused.status_code == 403 and "logged in as fay, which has no ops role" in refused.text
    assert "--role ops" in refused.text and "location" not in refused.headers
    assert refused_json.status_code == 403 and "fay has no ops role" in refused_json.json()["detail"]
    async with browser(web_app) as script:
        fay_token = await script.get("/ops/status.json", headers=bearer("fay"))
        olga_token = await script.get("/ops/status.json", headers=bearer("olga"))
        olga_api = await script.get("/api/proposals", headers=bearer("olga"))
        bo_api = await script.get("/api/proposals", headers=bearer("bo"))
    assert fay_token.status_code == 403
    assert olga_token.status_code == 200 and len(olga_token.json()["stages"]) == 5
    assert olga_api.status_code == 403 and "olga has no facilitator role" in olga_api.json()["detail"]
    assert bo_api.status_code == 200

    async with browser(web_app) as olga:  # an ops-only login sent to the default page lands on /ops
        form = await olga.get("/login")
        data = {"csrftoken": csrf_of(form.text), "name": "olga", "password": PASSWORDS["olga"], "next": "/proposals"}
        landed = await olga.post("/login", data=data)
        assert (landed.status_code, landed.headers["location"]) == (303, "/ops")
        home = await olga.get("/")
        assert (home.status_code, home.headers["location"]) == (303, "/ops")
        queue = await olga.get("/proposals")
        proposal = await olga.get("/proposals/proposal-1")
        ops = await olga.get("/ops")
    for page in (queue, proposal):
        assert page.status_code == 403 and "logged in as olga, which has no facilitator role" in page.text
    assert ops.status_code == 200 and "Proposals</a>" not in ops.text  # no link to pages olga may not see

    async with logged_in(web_app, "bo") as bo:
        both = await bo.get("/ops")
    assert both.status_code == 200 and 'href="/proposals">Proposals</a>' in both.text


async def test_after_the_seed_story_each_stage_shows_the_streams_counts(
    settings: Settings, client: NatsBroker, olga: httpx.AsyncClient
) -> None:
    with article_server((ASSETS / "bersin-article.html").read_bytes()) as url:
        await run_story(settings, url, lambda line: None)
    counts = await subject_counts(client)

    page = await olga.get("/ops")
    as_json = (await olga.get("/ops/status.json")).json()

    assert page.status_code == 200, page.text
    assert (
        page.headers["cache-control"] == "no-store"
        and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    )
    assert '<meta http-equiv="refresh" content="5; url=/ops">' in page.text
    assert as_json["generated_at"][:10] in page.text
    numbers = stage_numbers(page.text)
    assert list(numbers) == ["trigger", "enrich", "actions", "outreach", "archive"]
    for name in FLOW:
        expected_in = sum(counts.get(subject, 0) for subject in stage_inputs(name))
        expected_out = sum(counts.get(subject, 0) for subject in stage_outputs(name))
        assert numbers[name]["in"] == expected_in, name
        assert numbers[name]["out"] == expected_out, name
        assert numbers[name]["backlog"] == 0 and numbers[name]["dead-letters"] == 0, name
        (stage,) = [s for s in as_json["stages"] if s["name"] == name]
        assert (stage["messages_in"], stage["messages_out"]) == (expected_in, expected_out)
    assert (numbers["trigger"]["in"], numbers["trigger"]["out"]) == (1, 1)
    assert stage_inputs("outreach") == (
        bus.SESSIONS_SCHEDULED.subject,
        bus.PROPOSALS_TRANSITIONS.subject,
        bus.LIBRARY_ENTRIES.subject,
    )
    assert stage_outputs("outreach") == (bus.OUTREACH_RESULTS.subject,)  # its due posts stay inside it
    assert (
        numbers["outreach"]["out"] == counts[bus.OUTREACH_RESULTS.subject] == 9
    )  # announced, "starting now", the recording
    assert numbers["archive"]["out"] == 1
    for subject, count in counts.items():
        assert (
            f'<tr data-subject="{subject}"><td><code>{subject}</code></td><td class="count">{count}</td>' in page.text
        )
        assert as_json["subjects"][subject] == count
    # run_story stopped its stages: nobody pulls now, and the page says so, with status's own words.
    assert worker_of(page.text, "trigger") == "no"
    assert "Unhealthy" in page.text and "trigger: no live worker" in page.text
    assert as_json["healthy"] is False and "trigger: no live worker" in " ".join(as_json["problems"])
    assert "Every shared page of the last 24 hours was read." in page.text and as_json["unread_pages"] == []


def failed_fetch(n: int, reason: str = "http_404") -> EnrichmentFailed:
    trigger = make_content(native_id=f"unread-{n}").trigger
    return EnrichmentFailed.caused_by(
        trigger,
        id=f"failed:{n}",
        trigger=trigger,
        url=f"https://example.org/article-{n}",
        reason=reason,
        detail=f"https://example.org/article-{n} answered 404",
        retryable=False,
    )


async def test_pages_that_could_not_be_read_are_listed_newest_first(
    client: NatsBroker, olga: httpx.AsyncClient
) -> None:
    assert "Every shared page of the last 24 hours was read." in (await olga.get("/ops")).text
    for n in range(12):
        await bus.publish(client, bus.CONTENT_FAILED, failed_fetch(n, "blocked_address" if n == 11 else "http_404"))

    page = await olga.get("/ops")
    as_json = (await olga.get("/ops/status.json")).json()
    shown = [int(seq) for seq in re.findall(r'<li class="card unread-page" data-seq="(\d+)">', page.text)]
    assert len(shown) == ops_web.UNREAD_LIMIT == 10 and shown == sorted(shown, reverse=True)  # the newest ten
    assert [entry["url"] for entry in as_json["unread_pages"]] == [
        f"https://example.org/article-{n}" for n in range(11, 1, -1)
    ]
    assert as_json["unread_pages"][0]["reason"] == "blocked_address"
    assert '<span class="badge reason">blocked_address</span>' in page.text
    assert "https://example.org/article-11 answered 404" in page.text
    assert "https://example.org/article-1 answered" not in page.text  # older than the newest ten

    js = bus.jetstream(client)
    started = asyncio.get_running_loop().time()
    assert await ops_web.unread_pages(js, utc_now() + timedelta(hours=25)) == []  # all older than the window
    assert asyncio.get_running_loop().time() - started < 2  # told at once, not after a read timeout


async def test_a_running_pipeline_is_healthy(pipeline: NatsBroker, olga: httpx.AsyncClient) -> None:
    async def healthy() -> bool:
        return (await olga.get("/ops/status.json")).json()["healthy"]

    await wait_until(healthy, what="every stage's worker to be live")
    page = await olga.get("/ops")
    assert "<h1>Healthy</h1>" in page.text and "unhealthy" not in page.text
    assert all(worker_of(page.text, name) == "yes" for name in FLOW)


async def test_a_stopped_stage_shows_its_backlog_and_no_worker(
    settings: Settings, client: NatsBroker, olga: httpx.AsyncClient
) -> None:
    stages = create_broker(settings)
    await start_stages(stages, settings)
    await stages.stop()  # every durable consumer exists, nobody pulls
    for n in range(3):
        share = Share.from_source(source="cli", native_id=f"o-{n}", sharer="@stranger", url=f"https://example.com/{n}")
        await bus.publish(client, bus.SHARES, share)
    await asyncio.sleep(0.2)

    page = await olga.get("/ops")
    trigger = stage_numbers(page.text)["trigger"]
    assert trigger["backlog"] == 3 and trigger["in"] == 3 and trigger["out"] == 0
    assert worker_of(page.text, "trigger") == "no"
    chunk = page.text.split('data-stage="trigger"', 1)[1].split('data-stage="enrich"', 1)[0]
    assert "(oldest " in chunk and "unhealthy" in chunk
    assert "trigger: no live worker (no pull request waiting, nothing being handled)" in page.text
    stage = (await olga.get("/ops/status.json")).json()["stages"][0]
    assert (stage["name"], stage["backlog"], stage["live_worker"]) == ("trigger", 3, "no")
    assert stage["oldest_unacked_age"] > 0


async def test_a_poison_message_is_shown_and_replayed_once_by_whoever_is_logged_in(
    probe: Probe, client: NatsBroker, web_app: FastAPI, olga: httpx.AsyncClient
) -> None:
    await poison(client, 1)
    page = await olga.get("/ops")
    seq = waiting_seq(page.text)
    assert page.text.count(f'data-seq="{seq}"') == 2  # under "last errors" and under "waiting"
    assert "cannot handle example.com links yet" in page.text and PROBE.subject in page.text
    assert "1 delivery" in page.text and "unknown subject: cli:1 {id, " in page.text  # as `tail` says it
    assert "probe: 1 dead letter(s) waiting on impromptu.dlq.probe" in page.text
    assert "Dead letters waiting (1)" in page.text

    no_token = await olga.post(f"/ops/dead-letters/{seq}/replay", data={})
    forged = await olga.post(f"/ops/dead-letters/{seq}/replay", data={"csrftoken": "forged"})
    assert no_token.status_code == forged.status_code == 403
    assert (await get_dead_letter(client, seq)).record.state == "waiting"

    probe.fixed = True
    token = csrf_of(page.text)
    replayed = await olga.post(f"/ops/dead-letters/{seq}/replay", data={"csrftoken": token})
    assert (replayed.status_code, replayed.headers["location"]) == (303, "/ops")
    await wait_until(lambda: probe.handled, what="the replayed message to be handled")
    record = (await get_dead_letter(client, seq)).record
    assert (record.state, record.by, record.replay_msg_id) == ("replayed", "olga", f"cli:1:replay:{seq}")

    after = await olga.get("/ops")
    assert f"Dead letter {seq} replayed by olga" in after.text
    assert f'data-seq="{seq}" data-state="replayed"' in after.text and 'class="by">olga</strong>' in after.text
    assert "Dead letters waiting (0)" in after.text
    assert "dead letter(s) waiting" not in after.text  # replayed is not waiting, whatever the subject count says
    assert stage_numbers(after.text)  # the flow is still drawn

    async with logged_in(web_app, "bo") as bo:
        bo_token = csrf_of((await bo.get(f"/ops/dead-letters/{seq}")).text)
        again = await bo.post(f"/ops/dead-letters/{seq}/replay", data={"csrftoken": bo_token, "back": "detail"})
    assert again.status_code == 409, again.text
    assert f"cannot replay dead letter {seq}: already replayed by olga at" in again.text
    await asyncio.sleep(0.3)
    assert probe.handled == ["cli:1"]
    assert (await subject_counts(client))[PROBE.subject] == 2  # the original and one replay


async def test_discard_needs_a_reason_and_happens_once(
    probe: Probe, client: NatsBroker, olga: httpx.AsyncClient
) -> None:
    await poison(client, 1)
    seq = waiting_seq((await olga.get("/ops")).text)
    detail = await olga.get(f"/ops/dead-letters/{seq}")
    assert detail.status_code == 200 and '<meta http-equiv="refresh"' not in detail.text  # a reason can be typed
    token = csrf_of(detail.text)

    blank = await olga.post(f"/ops/dead-letters/{seq}/discard", data={"csrftoken": token, "reason": "  "})
    assert blank.status_code == 422 and "Say why you discard it" in blank.text
    done = await olga.post(f"/ops/dead-letters/{seq}/discard", data={"csrftoken": token, "reason": "a <test> link"})
    assert (done.status_code, done.headers["location"]) == (303, "/ops")
    record = (await get_dead_letter(client, seq)).record
    assert (record.state, record.by, record.reason) == ("discarded", "olga", "a <test> link")
    page = await olga.get("/ops")
    assert "a &lt;test&gt; link" in page.text and "a <test> link" not in page.text  # escaped, like all data

    second = await olga.post(f"/ops/dead-letters/{seq}/discard", data={"csrftoken": token, "reason": "again"})
    replay = await olga.post(f"/ops/dead-letters/{seq}/replay", data={"csrftoken": token})
    assert second.status_code == replay.status_code == 409
    assert "already discarded by olga" in second.text and "already discarded by olga" in replay.text
    missing = await olga.post("/ops/dead-letters/9999/replay", data={"csrftoken": token})
    not_a_dead_letter = await olga.get("/ops/dead-letters/1")  # seq 1 is the probe's share
    assert missing.status_code == not_a_dead_letter.status_code == 404
    assert "no dead letter 9999" in missing.text and f"message 1 is on {PROBE.subject}" in not_a_dead_letter.text
    assert probe.handled == []


async def test_when_nats_does_not_answer_the_page_says_so_instead_of_showing_numbers(
    olga: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_answer(js: object) -> None:
        raise nats.errors.TimeoutError

    monkeypatch.setattr(ops_web, "gather_status", no_answer)
    page = await olga.get("/ops")
    as_json = await olga.get("/ops/status.json")
    assert page.status_code == 503 and "NATS does not answer" in page.text and "data-stage" not in page.text
    assert as_json.status_code == 503 and as_json.json()["error"] == "unavailable"
    assert page.headers["retry-after"] == as_json.headers["retry-after"] == str(bus.RETRY_AFTER_SECONDS)


async def test_outreach_that_needs_a_person_is_shown_and_settled_from_the_page(
    client: NatsBroker, olga: httpx.AsyncClient
) -> None:
    kv = await stores.bucket(client, stores.OUTREACH)
    session = make_session()
    waiting = {}
    for channel in ("slack", "teams"):
        due = AnnouncementDue.caused_by(
            session, id=f"due:{channel}", session=session, channel=channel, kind="scheduled"
        )
        record = PostRecord(state="unknown", reason="interrupted", attempts=1, text=f"on {channel}", due=due)
        await kv.put(due.key, record.model_dump_json().encode())
        await kv.put(f"unknown.{due.key}", b"")
        waiting[channel] = due.key
    await health.mark_broken(kv, "x", "X refused the token (401 Unauthorized)", "s.x.scheduled")

    page = await olga.get("/ops")
    assert f'data-key="{waiting["slack"]}"' in page.text and 'data-channel="x"' in page.text
    assert "X refused the token (401 Unauthorized)" in page.text
    assert "2 post(s) may or may not have gone out" in page.text  # among the problems at the top
    token = csrf_of(page.text)

    forged = await olga.post("/ops/channels/x/reset", data={"csrftoken": "forged"})
    assert forged.status_code == 403 and await health.broken(kv, "x") is not None
    reset = await olga.post("/ops/channels/x/reset", data={"csrftoken": token})
    assert (reset.status_code, reset.headers["location"]) == (303, "/ops#outreach")
    assert await health.broken(kv, "x") is None

    slack = f"/ops/posts/{waiting['slack']}/resolve"
    nowhere = await olga.post(slack, data={"csrftoken": token, "outcome": "posted", "url": "javascript:alert(1)"})
    assert nowhere.status_code == 422
    posted = await olga.post(slack, data={"csrftoken": token, "outcome": "posted", "url": "https://slack.example/p1"})
    assert posted.status_code == 303
    settled = PostRecord.model_validate_json((await kv.get(waiting["slack"])).value or b"")
    assert (settled.state, settled.location) == ("posted", "https://slack.example/p1")
    twice = await olga.post(slack, data={"csrftoken": token, "outcome": "not_posted"})
    assert twice.status_code == 409 and "is posted, not unknown" in twice.text

    again = await olga.post(
        f"/ops/posts/{waiting['teams']}/resolve", data={"csrftoken": token, "outcome": "not_posted"}
    )
    assert again.status_code == 303
    reposts = await models_on(client, bus.OUTREACH_DUE.subject, AnnouncementDue)
    assert [d.id for d in reposts] == ["due:teams:again:1"]  # put back on the bus, under a new message id

    after = await olga.get("/ops")
    assert f"{waiting['teams']}: will be posted again (by olga)." in after.text
    assert "Outreach that needs a person" in after.text and "may or may not have gone out" not in after.text
