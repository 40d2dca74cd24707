"""The outreach commands as an operator types them: `impromptu render`, `channels`, `outreach list/resolve` and
`linkedin login`, each a real process (against a real nats-server where it needs the bus)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from faststream.nats import NatsBroker

from pipeline import bus, stores
from pipeline.channels.records import PostRecord
from pipeline.channels.xtext import weighted_length
from pipeline.messages import AnnouncementDue, OutreachResult
from pipeline.outreach import health
from pipeline.settings import Settings
from tests.integration.bus_helpers import models_on, seed_proposal, wait_until
from tests.linkedin_fake import FakeLinkedIn
from tests.peers import serve
from tests.unit.conftest import make_session

IMPROMPTU = str(Path(sys.executable).parent / "impromptu")


def impromptu(*args: str, data_dir: Path, nats_url: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_") and k != "NATS_URL"}
    environment.update(IMPROMPTU_DATA_DIR=str(data_dir), IMPROMPTU_LOG_JSON="true", **env)
    if nats_url:
        environment["NATS_URL"] = nats_url
    return subprocess.run([IMPROMPTU, *args], env=environment, capture_output=True, text=True, timeout=60)


def test_render_a_sample_offline_on_every_channel_and_kind(tmp_path: Path) -> None:
    x = impromptu("render", "--channel", "x", "--sample", data_dir=tmp_path)
    assert x.returncode == 0, x.stderr
    post, counted = x.stdout.rstrip().rsplit("\n\n", 1)
    assert "Why eLearning Isn't Working" in post and "https://meet.jit.si/" in post
    assert counted == f"[x scheduled: {weighted_length(post)} characters as x counts them]"
    assert weighted_length(post) <= 280

    cancelled = impromptu("render", "--channel", "email", "--sample", "--kind", "cancelled", data_dir=tmp_path)
    assert cancelled.returncode == 0 and cancelled.stdout.startswith("Subject:")

    refused = impromptu("render", "--channel", "myspace", "--sample", data_dir=tmp_path)
    assert refused.returncode == 1 and "template_missing" in refused.stderr

    custom = tmp_path / "templates" / "x"
    custom.mkdir(parents=True)
    (custom / "scheduled.j2").write_text("{{ title }} {{ nope }}\n")
    broken = impromptu(
        "render",
        "--channel",
        "x",
        "--sample",
        data_dir=tmp_path,
        IMPROMPTU_OUTREACH_TEMPLATES_DIR=str(tmp_path / "templates"),
    )
    assert broken.returncode == 1 and "template_variable" in broken.stderr and "nope" in broken.stderr


def test_channels_list_says_what_each_channel_needs(tmp_path: Path) -> None:
    dry = impromptu("channels", "list", data_dir=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "x         ready (dry run: writes to the outbox)" in dry.stdout.splitlines()

    live = impromptu(
        "channels",
        "list",
        data_dir=tmp_path,
        IMPROMPTU_OUTREACH_DRY_RUN="false",
        IMPROMPTU_SLACK_WEBHOOK="https://hooks.slack.com/services/T0/B0/secret-part",
    )
    lines = dict(line.split(maxsplit=1) for line in live.stdout.splitlines())
    assert lines["slack"] == "ready"
    assert lines["teams"] == "disabled: set IMPROMPTU_TEAMS_WEBHOOK"
    assert lines["mastodon"] == "disabled: set IMPROMPTU_MASTODON_URL, IMPROMPTU_MASTODON_ACCESS_TOKEN"
    assert "secret-part" not in live.stdout + live.stderr


def test_linkedin_login_prints_the_authorization_address(tmp_path: Path) -> None:
    done = impromptu(
        "linkedin",
        "login",
        data_dir=tmp_path,
        IMPROMPTU_LINKEDIN_CLIENT_ID="86abc",
        IMPROMPTU_LINKEDIN_CLIENT_SECRET="never-shown",
    )
    assert done.returncode == 0, done.stderr
    address = done.stdout.splitlines()[0]
    query = parse_qs(urlsplit(address).query)
    assert address.startswith("https://www.linkedin.com/oauth/v2/authorization?")
    assert query["client_id"] == ["86abc"] and "w_member_social" in query["scope"][0]
    assert query["state"][0] in done.stdout.split("state is ", 1)[1]
    assert "never-shown" not in done.stdout + done.stderr


@pytest.mark.nats
async def test_an_unknown_post_is_resolved_by_a_person(
    pipeline: NatsBroker, client: NatsBroker, settings: Settings
) -> None:
    session = make_session()
    due = AnnouncementDue.caused_by(session, id="due:1", session=session, channel="x", kind="scheduled")
    kv = await stores.bucket(client, stores.OUTREACH)
    unknown = PostRecord(state="unknown", reason="interrupted", attempts=1, due=due)
    await kv.put(due.key, unknown.model_dump_json().encode())
    await health.mark_broken(kv, "slack", "Slack said no_service", "s.slack.scheduled")
    run = {"data_dir": settings.data_dir, "nats_url": settings.nats_url}

    listed = impromptu("outreach", "list", "--unknown", **run)  # type: ignore[arg-type]
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [f"{due.key}  unknown  (interrupted)"]
    channels = impromptu("channels", "list", **run)  # type: ignore[arg-type]
    assert "slack     BROKEN: Slack said no_service" in channels.stdout.splitlines()

    neither = impromptu("outreach", "resolve", due.key, **run)  # type: ignore[arg-type]
    assert neither.returncode == 1 and "--posted URL or --not-posted" in neither.stderr
    again = impromptu("outreach", "resolve", due.key, "--not-posted", **run)  # type: ignore[arg-type]
    assert again.returncode == 0 and "will be posted again" in again.stdout

    async def posted() -> bool:
        results = await models_on(client, bus.OUTREACH_RESULTS.subject, OutreachResult)
        return any(r.channel == "x" and r.status == "posted" for r in results)

    await wait_until(posted, what="the post to be made again")  # the dry run's outbox
    assert (settings.outbox_dir / "x" / f"{session.id}.scheduled.txt").exists()
    twice = impromptu("outreach", "resolve", due.key, "--posted", "https://x.com/i/1", **run)  # type: ignore[arg-type]
    assert twice.returncode == 1 and "is posted, not unknown" in twice.stderr

    reset = impromptu("channels", "reset", "slack", **run)  # type: ignore[arg-type]
    assert reset.stdout.startswith("slack: reset") and await health.broken(kv, "slack") is None


@pytest.mark.nats
async def test_render_a_proposal_from_the_bus(pipeline: NatsBroker, client: NatsBroker, settings: Settings) -> None:
    proposal = await seed_proposal(client)
    run = {"data_dir": settings.data_dir, "nats_url": settings.nats_url}
    shown = impromptu("render", "--channel", "linkedin", "--proposal", proposal.id, **run)  # type: ignore[arg-type]
    assert shown.returncode == 0, shown.stderr
    assert proposal.content.article.title in shown.stdout and "[linkedin scheduled: " in shown.stdout
    assert not (settings.outbox_dir / "linkedin").exists()  # a preview posts nothing, not even to the outbox

    unknown = impromptu("render", "--channel", "x", "--proposal", "proposal-nope", **run)  # type: ignore[arg-type]
    assert unknown.returncode == 1 and "no proposal 'proposal-nope'" in unknown.stderr


def test_linkedin_token_exchanges_the_code_and_finds_the_author(tmp_path: Path) -> None:
    linkedin = FakeLinkedIn()
    with serve(linkedin.app) as url:
        env = {
            "IMPROMPTU_LINKEDIN_CLIENT_ID": linkedin.client_id,
            "IMPROMPTU_LINKEDIN_CLIENT_SECRET": linkedin.client_secret,
            "IMPROMPTU_LINKEDIN_REDIRECT_URI": linkedin.redirect_uri,
            "IMPROMPTU_LINKEDIN_OAUTH_URL": f"{url}/oauth/v2",
            "IMPROMPTU_LINKEDIN_API_URL": url,
        }
        code = linkedin.grant()
        done = impromptu("linkedin", "token", code, data_dir=tmp_path, **env)
        reused = impromptu("linkedin", "token", code, data_dir=tmp_path, **env)  # a code works once
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == [
        f"IMPROMPTU_LINKEDIN_ACCESS_TOKEN={linkedin.token}",
        f"IMPROMPTU_LINKEDIN_AUTHOR={linkedin.author}",
    ]
    assert linkedin.token not in done.stderr  # printed once, for the person to keep; never logged
    assert reused.returncode == 1 and "invalid_request" in reused.stderr
    assert code not in reused.stderr and linkedin.client_secret not in reused.stderr
