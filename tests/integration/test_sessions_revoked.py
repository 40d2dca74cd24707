"""A copied login cookie dies when its person logs out (on any worker) and when the password is reset: the cookie
carries the login's epoch, kept in NATS KV and checked on every request, and a digest of the password hash."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from faststream.nats import NatsBroker

from pipeline.actions.service import Approvals
from pipeline.app import connected
from pipeline.domain.live_rules import LiveRules
from pipeline.settings import Settings
from pipeline.web.auth import SESSION_COOKIE
from pipeline.web.server import create_web_app
from tests.integration.test_approval_web import PASSWORDS, browser, csrf_of, log_in, web_settings

pytestmark = pytest.mark.nats
__all__ = ["web_settings"]  # fixture shared with test_approval_web

CLI = str(Path(sys.executable).parent / "impromptu")
CHECKOUT = (
    Path(__file__).resolve().parents[2]
)  # this checkout's code, whichever checkout the command was installed from


def copy_of(cookies: httpx.Cookies) -> dict[str, str]:
    return {SESSION_COOKIE: cookies[SESSION_COOKIE]}


async def logged_out(http: httpx.AsyncClient) -> bool:
    answer = await http.get("/proposals")
    if answer.status_code == 200:
        return False
    assert (answer.status_code, answer.headers["location"]) == (303, "/login?next=/proposals"), answer.text
    return True


async def test_a_copied_cookie_dies_when_its_person_logs_out_on_another_worker(
    web_settings: Settings, client: NatsBroker
) -> None:
    async with connected(web_settings) as other_connection:
        worker_a = create_web_app(
            web_settings, client, Approvals(client, web_settings, LiveRules.load(web_settings.rules_file))
        )
        worker_b = create_web_app(
            web_settings,
            other_connection,
            Approvals(other_connection, web_settings, LiveRules.load(web_settings.rules_file)),
        )
        async with browser(worker_a) as ana, browser(worker_b) as thief, browser(worker_a) as ben:
            assert (await log_in(ana, "ana", PASSWORDS["ana"])).status_code == 303
            assert (await log_in(ben, "ben", PASSWORDS["ben"])).status_code == 303
            stolen = copy_of(ana.cookies)
            thief.cookies.update(stolen)
            assert not await logged_out(thief)  # the copy works, on the other worker too, until...

            page = await ana.get("/proposals")
            assert (await ana.post("/logout", data={"csrftoken": csrf_of(page.text)})).status_code == 303

            assert await logged_out(thief)
            assert await logged_out(ana)
            assert not await logged_out(ben)  # another login is not touched
            # logging in again makes a cookie that works; the old copy stays dead
            assert (await log_in(ana, "ana", PASSWORDS["ana"])).status_code == 303
            assert not await logged_out(ana)
            async with browser(worker_b) as second_thief:
                second_thief.cookies.update(stolen)
                assert await logged_out(second_thief)


async def test_a_copied_cookie_dies_when_the_password_is_reset(settings: Settings, client: NatsBroker) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_")}
    env.update(IMPROMPTU_DATA_DIR=str(settings.data_dir), PYTHONPATH=str(CHECKOUT))

    def facilitators_add(password: str) -> None:
        done = subprocess.run(
            [CLI, "facilitators", "add", "zoe", "--password-stdin"],
            env=env,
            input=password + "\n",
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr

    await asyncio.to_thread(facilitators_add, "zoe's first password")
    app = create_web_app(settings, client, Approvals(client, settings, LiveRules.load(settings.rules_file)))
    async with browser(app) as zoe, browser(app) as thief:
        assert (await log_in(zoe, "zoe", "zoe's first password")).status_code == 303
        stolen = copy_of(zoe.cookies)
        thief.cookies.update(stolen)
        assert not await logged_out(thief)

        await asyncio.to_thread(facilitators_add, "zoe's second password")  # the reset

        assert await logged_out(thief)
        assert await logged_out(zoe)
        assert (await log_in(zoe, "zoe", "zoe's first password")).status_code == 400
        assert (await log_in(zoe, "zoe", "zoe's second password")).status_code == 303
    async with browser(app) as thief_again:
        thief_again.cookies.update(stolen)
        assert await logged_out(thief_again)
