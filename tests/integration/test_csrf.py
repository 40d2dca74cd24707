"""The CSRF check of the pages' forms, URL-encoded and multipart alike (asgi-csrf answered every multipart post with
a 500): a form with its token goes through, one without it, or with a token this site did not sign, is a 403."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from faststream.nats import NatsBroker

from pipeline.domain.approval import get_record
from pipeline.web.csrf import CSRF_COOKIE
from tests.integration.bus_helpers import seed_proposal
from tests.integration.test_approval_web import PASSWORDS, browser, csrf_of, log_in, web_app, web_settings

pytestmark = pytest.mark.nats
__all__ = ["web_app", "web_settings"]  # fixtures shared with test_approval_web


def multipart(fields: dict[str, str]) -> dict[str, tuple[None, str]]:
    """The fields as multipart/form-data parts without a file name, as a browser sends a form with that enctype."""
    return {name: (None, value) for name, value in fields.items()}


async def test_a_multipart_login_needs_its_token(web_app: FastAPI) -> None:
    async with browser(web_app) as ana:
        token = csrf_of((await ana.get("/login")).text)
        fields = {"name": "ana", "password": PASSWORDS["ana"], "next": "/proposals"}
        without = await ana.post("/login", files=multipart(fields))
        assert without.request.headers["content-type"].startswith("multipart/form-data")
        assert (await ana.get("/proposals")).status_code == 303  # not logged in
        wrong = await ana.post("/login", files=multipart({**fields, "csrftoken": token + "x"}))
        a_file = {**multipart({**fields, "csrftoken": token}), "note": ("note.txt", b"hello", "text/plain")}
        with_a_file = await ana.post("/login", files=a_file)
        right = await ana.post("/login", files=multipart({**fields, "csrftoken": token}))
        queue = await ana.get("/proposals")

    assert without.status_code == wrong.status_code == 403
    assert with_a_file.status_code == 400 and "could not be read" in with_a_file.text  # no form here takes a file
    assert "did not come from this site" in without.text
    assert (right.status_code, right.headers["location"]) == (303, "/proposals")
    assert queue.status_code == 200 and "Logged in as ana." in queue.text


async def test_a_multipart_decision_is_taken_with_the_token_and_refused_without(
    pipeline: NatsBroker, client: NatsBroker, web_app: FastAPI
) -> None:
    proposal = await seed_proposal(client)
    async with browser(web_app) as ana:
        assert (await log_in(ana, "ana", PASSWORDS["ana"])).status_code == 303
        page = await ana.get(f"/proposals/{proposal.id}")
        reason = {"reason": "not for us this month"}
        refused = await ana.post(f"/proposals/{proposal.id}/reject", files=multipart(reason))
        assert (await get_record(client, proposal.id)).state == "proposed"
        done = await ana.post(
            f"/proposals/{proposal.id}/reject", files=multipart({**reason, "csrftoken": csrf_of(page.text)})
        )

    assert refused.status_code == 403
    assert (done.status_code, done.headers["location"]) == (303, f"/proposals/{proposal.id}")
    record = await get_record(client, proposal.id)
    assert (record.state, record.decided_by, record.reason) == ("rejected", "ana", "not for us this month")


async def test_a_token_this_site_did_not_sign_is_refused(web_app: FastAPI) -> None:
    """A cookie planted by a neighbouring host (or typed by hand) with the same value in the form."""
    planted = "chosen-by-the-attacker.0000000000000000000000000000000000000000000000000000000000000000"
    async with browser(web_app) as mallory:
        mallory.cookies.set(CSRF_COOKIE, planted)
        fields = {"csrftoken": planted, "name": "ana", "password": PASSWORDS["ana"]}
        urlencoded = await mallory.post("/login", data=fields)
        as_multipart = await mallory.post("/login", files=multipart(fields))
    assert urlencoded.status_code == as_multipart.status_code == 403


async def test_the_token_comes_with_the_first_page_and_stays(web_app: FastAPI) -> None:
    async with browser(web_app) as ana:
        first = await ana.get("/login")
        cookie = first.headers["set-cookie"]
        again = await ana.get("/login")
    assert cookie.startswith(f"{CSRF_COOKIE}=") and "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert "set-cookie" not in again.headers and csrf_of(first.text) == csrf_of(again.text)
