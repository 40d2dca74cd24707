"""A form body the CSRF check cannot read (not UTF-8, a broken multipart, no boundary) is a 400 page, not a 500 with
a traceback: the CSRF check parses the body itself before the app sees it (a readable multipart form: test_csrf)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from structlog.testing import capture_logs

from tests.integration.test_approval_web import PASSWORDS, browser, csrf_of, web_app, web_settings

pytestmark = pytest.mark.nats
__all__ = ["web_app", "web_settings"]  # fixtures shared with test_approval_web

UNREADABLE = [
    ("application/x-www-form-urlencoded", b"name=\xff\xfe&password=x"),
    ("multipart/form-data; boundary=zz", b"--zz\r\nnot a header line\r\n\r\nana\r\n--zz--"),
    ("multipart/form-data", b"no boundary at all"),
]


@pytest.mark.parametrize(("content_type", "body"), UNREADABLE, ids=["not-utf-8", "broken-multipart", "no-boundary"])
async def test_a_form_the_csrf_check_cannot_read_is_a_400_page(
    web_app: FastAPI, content_type: str, body: bytes
) -> None:
    async with browser(web_app) as ana:
        await ana.get("/login")  # the CSRF cookie, as a browser has it
        with capture_logs() as logs:
            answer = await ana.post("/login", content=body, headers={"Content-Type": content_type})
        assert answer.status_code == 400 and "This form could not be read." in answer.text
        assert [entry["event"] for entry in logs] == ["web.form_unreadable"]
        form = await ana.get("/login")  # and the site goes on as before
        data = {"csrftoken": csrf_of(form.text), "name": "ana", "password": PASSWORDS["ana"], "next": "/proposals"}
        assert (await ana.post("/login", data=data)).status_code == 303
