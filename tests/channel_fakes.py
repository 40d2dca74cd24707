"""Local stand-ins for the outreach channels' providers, as FastAPI apps to run with `tests.peers.serve`:
the Facebook Graph Page feed, Mastodon statuses, a Slack incoming webhook and a Teams Workflows webhook.

Each fake answers as its provider documents (payload shapes from /work/issue7-research.md §4-7), keeps what it
was sent in `received` (every request) and in what it posted (`posts`, `statuses`, `messages`, `cards`), and can
be told to answer the next request(s) with an error instead::

    fake = FakeSlack()
    with serve(fake.app) as base:
        channel = SlackChannel(fake.webhook(base))
        fake.fail_with("channel_is_archived")      # Slack's documented 410 for the next request
        ...
    fake.received[-1].json(), fake.messages

For "killed mid-post" tests: `delay` (seconds) holds every answer after the provider did its work (the post
exists, the poster has not heard back yet), and `await fake.wait_for(n)` returns once n requests arrived.
Handlers run in the server's thread; `received` only ever grows, so tests may read it at any time.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from pipeline.channels.base import Kind, NotSent, Post
from pipeline.errors import RetryableError
from pipeline.messages import ScheduledSession
from tests.peers import serve

__all__ = [
    "Answer",
    "FakeFacebook",
    "FakeMastodon",
    "FakeSlack",
    "FakeTeams",
    "Received",
    "assert_hidden",
    "hanging",
    "make_post",
    "outcome_unknown",
    "running",
    "unreachable",
    "serve",
]

Body = str | bytes | dict[str, Any] | list[Any] | None


@dataclass(frozen=True)
class Received:
    """One request as it arrived: header names are lower case; `query` is the raw query string."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def url(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        """An application/x-www-form-urlencoded body (one value per field)."""
        return {name: values[-1] for name, values in parse_qs(self.text, keep_blank_values=True).items()}

    def params(self) -> dict[str, str]:
        return {name: values[-1] for name, values in parse_qs(self.query, keep_blank_values=True).items()}


@dataclass(frozen=True)
class Answer:
    """A canned answer: a dict or list body is sent as JSON, text as `content_type` (text/plain by default)."""

    status: int
    body: Body = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None

    def response(self) -> Response:
        if isinstance(self.body, dict | list):
            return JSONResponse(self.body, self.status, headers=dict(self.headers))
        media = self.content_type or "text/plain; charset=utf-8"
        return Response(self.body or b"", self.status, headers=dict(self.headers), media_type=media)


class FakeProvider:
    """What every fake shares: recording, canned errors, a delay before answering, waiting for requests."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.delay = 0.0  # seconds each answer is held, after the work is done
        # called once the provider has done the work, before it answers: e.g. kill the worker that is posting
        self.before_answer: Callable[[Received], None] | None = None
        self._canned: list[tuple[str | None, Answer]] = []
        self._lock = threading.Lock()
        self.app = FastAPI()
        self.app.middleware("http")(self._intercept)
        self._routes(self.app)

    def _routes(self, app: FastAPI) -> None:
        raise NotImplementedError

    def fail(
        self,
        status: int,
        body: Body = None,
        headers: Mapping[str, str] | None = None,
        *,
        times: int = 1,
        method: str | None = None,
        content_type: str | None = None,
    ) -> None:
        """Answer the next `times` requests (only `method` ones, if given) with this instead of doing the work."""
        answer = Answer(status, body, dict(headers or {}), content_type)
        with self._lock:
            self._canned.extend([(method, answer)] * times)

    async def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """Wait until `count` requests have arrived (they may still be waiting for their answer)."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{type(self).__name__} got {len(self.received)} of {count} requests")
            await asyncio.sleep(0.01)
        return list(self.received)

    def _next_canned(self, method: str) -> Answer | None:
        with self._lock:
            for index, (wanted, answer) in enumerate(self._canned):
                if wanted is None or wanted == method:
                    del self._canned[index]
                    return answer
        return None

    async def _intercept(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        body = await request.body()
        headers = {name.lower(): value for name, value in request.headers.items()}
        query = request.url.query
        self.received.append(Received(request.method, request.url.path, query, headers, body))
        canned = self._next_canned(request.method)
        response = canned.response() if canned else await call_next(request)
        if self.before_answer is not None:
            self.before_answer(self.received[-1])
        if self.delay:
            await asyncio.sleep(self.delay)
        return response


def make_post(
    session: ScheduledSession,
    channel: str,
    text: str,
    *,
    kind: Kind = "scheduled",
    link: str | None = None,
    title: str | None = None,
    description: str | None = None,
) -> Post:
    """The announcement of `session` on `channel`, keyed as the outreach stage keys it; the link card is the
    session's unless given."""
    return Post(
        key=f"{session.id}.{channel}.{kind}",
        channel=channel,
        kind=kind,
        text=text,
        session=session,
        link=session.join_url if link is None else link,
        title=session.proposal.title if title is None else title,
        description=session.proposal.description if description is None else description,
    )


# Text strangers write, dressed as links to somewhere else: the article's title, author and summary come from the
# page, the sharer's name from the share.
EVIL = "https://evil.example"
HOSTILE_TITLE = f"Read this [Join here]({EVIL}/join) first"
HOSTILE_NAME = f"[Josh Bersin]({EVIL}/author)"
HOSTILE_SUMMARY = (
    f'Nested: [the [real] session]({EVIL}/nested). Spaced: [Join] ({EVIL}/spaced). Titled: [Join]({EVIL}/t "ok").\n\n'
    f"By reference: [Join now][1] and [Join now].\n\n[1]: {EVIL}/ref\n[join now]: {EVIL}/shortcut\n\n"
    f"Slack-style: <{EVIL}/slack|Join here> and <!channel>."
)


def hostile_session(build_session: Callable[..., ScheduledSession]) -> ScheduledSession:
    """A session whose every stranger-written text carries a link made to look like ours."""
    session = build_session(title=HOSTILE_TITLE, author=HOSTILE_NAME, summary=HOSTILE_SUMMARY)
    content = session.proposal.content
    share = content.trigger.share.model_copy(update={"sharer": f"[@britz]({EVIL}/sharer)"})
    trigger = content.trigger.model_copy(update={"share": share})
    proposal = session.proposal.model_copy(update={"content": content.model_copy(update={"trigger": trigger})})
    return session.model_copy(update={"proposal": proposal})


# --- checks every channel's tests make ------------------------------------------------------------------------

Fake = TypeVar("Fake", bound="FakeProvider")


def running(fake: Fake) -> Iterator[tuple[Fake, str]]:
    """`fake` served for one test, with its base URL; a fixture's body: `yield from running(FakeSlack())`."""
    with serve(fake.app) as base:
        yield fake, base


def assert_hidden(error: BaseException, *secrets: str) -> None:
    """None of `secrets` shows in the error's message (reasons end up in logs and in people's notices)."""
    for secret in secrets:
        assert secret not in str(error)


def hanging() -> httpx.MockTransport:
    """A provider that never answers: a read timeout after the request went out, whose message (as some of
    httpx's do) repeats the request, URL, headers, body and all."""

    def hang(request: httpx.Request) -> httpx.Response:
        seen = f"{request.method} {request.url} {dict(request.headers)} {request.content!r}"
        raise httpx.ReadTimeout(f"timed out: {seen}", request=request)

    return httpx.MockTransport(hang)


async def outcome_unknown(
    attempt: Awaitable[object], match: str = "did not answer in time.*the post may have been made"
) -> RetryableError:
    """The error of an `attempt` (e.g. `channel.post(post)`) whose outcome is unknown: retryable, but not a
    NotSent, since the post may exist and must not be made again blindly. By default: sent, not answered in time."""
    with pytest.raises(RetryableError, match=match) as raised:
        await attempt
    assert not isinstance(raised.value, NotSent)
    return raised.value


async def unreachable(attempt: Awaitable[object]) -> NotSent:
    """The error of an `attempt` on a provider that refuses the connection: surely not sent."""
    with pytest.raises(NotSent, match="could not be reached") as raised:
        await attempt
    return raised.value


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    return value[len("Bearer ") :] if value.startswith("Bearer ") else None


# --- Facebook Graph API ---------------------------------------------------------------------------------------


class FakeFacebook(FakeProvider):
    """A Page's feed on the Graph API: POST /{version}/{page}/feed (form fields message, link, access_token),
    GET /{version}/{page}/feed?fields=...&limit=N (newest first), DELETE /{version}/{post-id} -> {"success": true}.

    The token is accepted as the `access_token` form field or query parameter, or `Authorization: Bearer`, as the
    Graph API does. Errors are `{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}` with
    HTTP 400: 190 for a bad token, 100/33 for an unknown object, 506 when the same text was posted already.
    """

    def __init__(self, page_id: str = "104365452358235", token: str = "EAAGm0PX4ZCpsBAPAGE-TOKEN-SECRET") -> None:
        self.page_id = page_id
        self.token = token
        self.posts: dict[str, dict[str, Any]] = {}  # post id -> {id, message, link, created_time}, oldest first
        super().__init__()

    @staticmethod
    def error(code: int, message: str, *, subcode: int | None = None, kind: str = "OAuthException") -> dict[str, Any]:
        error: dict[str, Any] = {"message": message, "type": kind, "code": code}
        if subcode is not None:
            error["error_subcode"] = subcode
        return {"error": error | {"fbtrace_id": "A" + secrets.token_urlsafe(12)}}

    @staticmethod
    def usage(page_id: str, regain_minutes: int, call_count: int = 100) -> dict[str, str]:
        """The X-Business-Use-Case-Usage header Facebook sends with Page-token calls (percentages, minutes)."""
        entry = {
            "type": "pages",
            "call_count": call_count,
            "total_cputime": 23,
            "total_time": 23,
            "estimated_time_to_regain_access": regain_minutes,
        }
        return {"X-Business-Use-Case-Usage": json.dumps({page_id: [entry]})}

    def fail_graph(
        self,
        code: int,
        message: str,
        *,
        subcode: int | None = None,
        status: int = 400,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
        method: str | None = None,
    ) -> None:
        """The next request(s) get this Graph error (most come with HTTP 400, whatever the code)."""
        self.fail(status, self.error(code, message, subcode=subcode), headers, times=times, method=method)

    def _token_problem(self, given: str | None) -> Response | None:
        if not given:
            message = "An active access token must be used to query information about the current user."
            return JSONResponse(self.error(2500, message), 400)
        if given != self.token:
            return JSONResponse(self.error(190, "Invalid OAuth access token - Cannot parse access token"), 400)
        return None

    def _no_object(self, what: str, object_id: str) -> Response:
        message = (
            f"Unsupported {what} request. Object with ID '{object_id}' does not exist, cannot be loaded due to "
            "missing permissions, or does not support this operation. Please read the Graph API documentation at "
            "https://developers.facebook.com/docs/graph-api"
        )
        return JSONResponse(self.error(100, message, subcode=33, kind="GraphMethodException"), 400)

    def _routes(self, app: FastAPI) -> None:
        @app.post("/{version}/{page}/feed")
        async def publish(version: str, page: str, request: Request) -> Response:
            form = {k: str(v) for k, v in (await request.form()).items()}
            token = form.get("access_token") or request.query_params.get("access_token") or _bearer(request)
            if problem := self._token_problem(token):
                return problem
            if page != self.page_id:
                return self._no_object("post", page)
            message, link = form.get("message", "").strip(), form.get("link")
            if not message and not link:
                return JSONResponse(self.error(100, "(#100) Missing message or attachment"), 400)
            if message and any(post["message"] == message for post in self.posts.values()):
                return JSONResponse(self.error(506, "(#506) Duplicate status message"), 400)
            post_id = f"{self.page_id}_{122100000000000000 + len(self.posts) + 1}"
            created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")
            self.posts[post_id] = {"id": post_id, "message": message, "link": link, "created_time": created}
            return JSONResponse({"id": post_id})

        @app.get("/{version}/{page}/feed")
        async def feed(version: str, page: str, request: Request) -> Response:
            if problem := self._token_problem(_bearer(request) or request.query_params.get("access_token")):
                return problem
            if page != self.page_id:
                return self._no_object("get", page)
            fields = set(request.query_params.get("fields", "id,message,created_time").split(",")) | {"id"}
            limit = int(request.query_params.get("limit", "25"))
            newest = list(reversed(self.posts.values()))
            start = 0
            if after := request.query_params.get("after"):  # Graph's cursors are opaque; ours encode the offset
                start = int(base64.urlsafe_b64decode(after).decode().removeprefix("offset:"))
            window = newest[start : start + limit]
            data = [{name: post[name] for name in fields if post.get(name)} for post in window]
            body: dict[str, Any] = {"data": data}
            if data:

                def cursor(offset: int) -> str:
                    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()

                end = start + len(window)
                body["paging"] = {"cursors": {"before": cursor(start), "after": cursor(end)}}
                if end < len(newest):  # as Graph: `next` only while an older page exists
                    body["paging"]["next"] = f"{request.base_url}{version}/{page}/feed?after={cursor(end)}"
            return JSONResponse(body)

        @app.delete("/{version}/{object_id}")
        async def delete(version: str, object_id: str, request: Request) -> Response:
            if problem := self._token_problem(_bearer(request) or request.query_params.get("access_token")):
                return problem
            if self.posts.pop(object_id, None) is None:
                return self._no_object("delete", object_id)
            return JSONResponse({"success": True})


# --- Mastodon -------------------------------------------------------------------------------------------------


class FakeMastodon(FakeProvider):
    """An instance's statuses API: POST /api/v1/statuses (form or JSON: status, visibility), GET and
    DELETE /api/v1/statuses/:id, with `Authorization: Bearer` and errors as `{"error": "..."}`.

    `Idempotency-Key` is honoured as Mastodon does: the same key from the same token gets the status the first
    request made, and no second one (`forget_keys()` is the hour passing). 401 for a bad token, 422 for a blank
    or over-long status (URLs count 23), 429 once `post_limit` statuses were made; every answer carries
    X-RateLimit-Limit/-Remaining/-Reset (ISO 8601 with microseconds).
    """

    def __init__(self, token: str = "mastodon-token-SECRET-b5d1c9", max_characters: int = 500) -> None:
        self.token = token
        self.max_characters = max_characters
        self.statuses: dict[str, dict[str, Any]] = {}  # id -> the Status entity, oldest first
        self.post_limit: int | None = None  # statuses allowed before 429 (Mastodon: 300 per 3 hours)
        self.reset_at = datetime.now(UTC) + timedelta(hours=3)
        self._keys: dict[str, str] = {}  # Idempotency-Key -> status id
        self._made = 0
        super().__init__()

    def forget_keys(self) -> None:
        """What an hour does: Mastodon no longer remembers the Idempotency-Keys it was sent."""
        self._keys.clear()

    def rate_headers(self, remaining: int = 299) -> dict[str, str]:
        reset = self.reset_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {"X-RateLimit-Limit": "300", "X-RateLimit-Remaining": str(remaining), "X-RateLimit-Reset": reset}

    def fail_rate_limited(self, reset_at: datetime | None = None, *, times: int = 1) -> None:
        if reset_at is not None:
            self.reset_at = reset_at
        self.fail(429, {"error": "Too many requests"}, self.rate_headers(0), times=times)

    def _answer(self, body: dict[str, Any], status: int = 200) -> Response:
        remaining = 300 - self._made if self.post_limit is None else max(0, self.post_limit - self._made)
        return JSONResponse(body, status, headers=self.rate_headers(remaining))

    def _status(self, base: str, text: str, visibility: str) -> dict[str, Any]:
        status_id = str(113500000000000000 + self._made + 1)  # never reused, even after a delete
        paragraphs = "".join(f"<p>{html.escape(part)}</p>" for part in text.split("\n\n"))
        return {
            "id": status_id,
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "in_reply_to_id": None,
            "in_reply_to_account_id": None,
            "sensitive": False,
            "spoiler_text": "",
            "visibility": visibility,
            "language": "en",
            "uri": f"{base}/users/impromptu/statuses/{status_id}",
            "url": f"{base}/@impromptu/{status_id}",
            "replies_count": 0,
            "reblogs_count": 0,
            "favourites_count": 0,
            "edited_at": None,
            "content": paragraphs,
            "reblog": None,
            "application": {"name": "Impromptu", "website": None},
            "account": {"id": "109000000000000001", "username": "impromptu", "acct": "impromptu"},
            "media_attachments": [],
            "mentions": [],
            "tags": [],
            "emojis": [],
            "card": None,
            "poll": None,
        }

    def _invalid(self, text: str, visibility: str) -> str | None:
        if not text.strip():
            return "Validation failed: Text can't be blank"
        if len(re.sub(r"https?://\S+", "x" * 23, text)) > self.max_characters:
            return f"Validation failed: Text character limit of {self.max_characters} exceeded"
        if visibility not in ("public", "unlisted", "private", "direct"):
            return "Validation failed: Visibility is not included in the list"
        return None

    def _routes(self, app: FastAPI) -> None:
        def refused(request: Request) -> Response | None:
            if _bearer(request) != self.token:
                return self._answer({"error": "The access token is invalid"}, 401)
            return None

        @app.post("/api/v1/statuses")
        async def create(request: Request) -> Response:
            if problem := refused(request):
                return problem
            if request.headers.get("content-type", "").startswith("application/json"):
                fields = {k: str(v) for k, v in (await request.json()).items()}
            else:
                fields = {k: str(v) for k, v in (await request.form()).items()}
            # From here to the store nothing awaits: two requests with one key (a retry while the first is still
            # being read) make one status, as Mastodon's lock on the key does
            key = request.headers.get("idempotency-key")
            if key and key in self._keys and self._keys[key] in self.statuses:
                return self._answer(self.statuses[self._keys[key]])
            text, visibility = fields.get("status", ""), fields.get("visibility", "public")
            if invalid := self._invalid(text, visibility):
                return self._answer({"error": invalid}, 422)
            if self.post_limit is not None and self._made >= self.post_limit:
                return self._answer({"error": "Too many requests"}, 429)
            status = self._status(str(request.base_url).rstrip("/"), text, visibility)
            self.statuses[status["id"]] = status
            self._made += 1
            if key:
                self._keys[key] = status["id"]
            return self._answer(status)

        @app.get("/api/v1/statuses/{status_id}")
        async def show(status_id: str, request: Request) -> Response:
            if status_id not in self.statuses:
                return self._answer({"error": "Record not found"}, 404)
            return self._answer(self.statuses[status_id])

        @app.delete("/api/v1/statuses/{status_id}")
        async def delete(status_id: str, request: Request) -> Response:
            if problem := refused(request):
                return problem
            status = self.statuses.pop(status_id, None)
            if status is None:
                return self._answer({"error": "Record not found"}, 404)
            text = re.sub(r"<[^>]+>", "", status["content"].replace("</p><p>", "\n\n"))
            return self._answer(status | {"text": html.unescape(text)})  # the source, for redrafting


# --- Slack incoming webhook -----------------------------------------------------------------------------------

# Slack's documented status for each error string (2016 changelog; the newer ones from third-party suites).
SLACK_ERRORS: dict[str, int] = {
    "invalid_payload": 400,
    "user_not_found": 400,
    "no_text": 400,
    "invalid_blocks": 400,
    "too_many_attachments": 400,
    "action_prohibited": 403,
    "invalid_token": 403,
    "team_disabled": 403,
    "posting_to_general_channel_denied": 403,
    "channel_not_found": 404,
    "no_service": 404,
    "no_service_id": 404,
    "no_team": 404,
    "channel_is_archived": 410,
    "rollup_error": 500,
}


class FakeSlack(FakeProvider):
    """An incoming webhook: POST /services/T…/B…/secret with a JSON message; 200 "ok", or an error string as a
    plain-text body (invalid_payload, no_text, invalid_blocks; no_service for an unknown webhook path)."""

    def __init__(self, path: str = "/services/T0A1B2C3D/B0E4F5G6H/wEbHoOkSeCrEt0123456789ab") -> None:
        self.path = path
        self.messages: list[dict[str, Any]] = []  # the payloads Slack accepted and showed
        super().__init__()

    def webhook(self, base: str) -> str:
        return base + self.path

    def fail_with(self, code: str, *, retry_after: int | None = None, times: int = 1) -> None:
        """Answer with Slack's error string and its status; "rate_limited" is a 429 with Retry-After."""
        if code == "rate_limited":
            self.fail(429, "rate_limited", {"Retry-After": str(retry_after or 1)}, times=times)
        else:
            self.fail(SLACK_ERRORS[code], code, times=times, content_type="text/html")

    @staticmethod
    def _refusal(payload: object) -> str | None:
        if not isinstance(payload, dict):
            return "invalid_payload"
        blocks = payload.get("blocks")
        if blocks is not None and (
            not isinstance(blocks, list)
            or len(blocks) > 50
            or not all(isinstance(block, dict) and isinstance(block.get("type"), str) for block in blocks)
        ):
            return "invalid_blocks"
        if not payload.get("text") and not blocks:
            return "no_text"
        return None

    def _routes(self, app: FastAPI) -> None:
        @app.post("/services/{team}/{bot}/{secret}")
        async def incoming(request: Request) -> Response:
            if request.url.path != self.path:
                return Response("no_service", 404, media_type="text/html")
            try:
                payload = json.loads(await request.body())
            except ValueError:
                payload = None
            if code := self._refusal(payload):
                return Response(code, SLACK_ERRORS[code], media_type="text/html")
            self.messages.append(payload)
            return Response("ok", 200, media_type="text/html")


# --- Teams Workflows webhook ----------------------------------------------------------------------------------


class FakeTeams(FakeProvider):
    """A "When a Teams webhook request is received" flow: POST …/workflows/{id}/triggers/manual/paths/invoke
    ?api-version=1&sp=…&sv=1.0&sig=… with any JSON answers 202 and an empty body; the flow then runs on its own.

    A run posts the card when the body is the message envelope with an Adaptive Card of at most 28 KB
    (`cards`); any other run fails where nobody sees it (`failed_runs`), as in Teams. A wrong `sig` gets 401 and
    an unknown workflow 404, with Power Automate's `{"error": {"code", "message"}}` (codes UNCONFIRMED).
    """

    MAX_BYTES = 28 * 1024

    def __init__(
        self, workflow_id: str = "5f0c2c3e8e4b4f6c9a1d2e3f4a5b6c7d", sig: str = "TeAmSsIgSeCrEt-q1w2e3r4"
    ) -> None:
        self.workflow_id = workflow_id
        self.sig = sig
        self.cards: list[dict[str, Any]] = []  # the Adaptive Cards the flow posted
        self.failed_runs: list[str] = []  # why a run failed after the 202
        super().__init__()

    def webhook(self, base: str) -> str:
        path = f"/powerautomate/automations/direct/workflows/{self.workflow_id}/triggers/manual/paths/invoke"
        query = urlencode({"api-version": "1", "sp": "/triggers/manual/run", "sv": "1.0", "sig": self.sig})
        return f"{base}{path}?{query}"

    @staticmethod
    def error(code: str, message: str) -> dict[str, Any]:
        return {"error": {"code": code, "message": message}}

    def _run(self, body: bytes) -> None:
        """The flow's "Post card in a chat or channel" step, after the caller got its 202."""
        message = json.loads(body)
        attachments = message.get("attachments") if isinstance(message, dict) else None
        if not isinstance(attachments, list) or not attachments or not isinstance(attachments[0], dict):
            self.failed_runs.append("no attachments")
            return
        card = attachments[0].get("content")
        if attachments[0].get("contentType") != "application/vnd.microsoft.card.adaptive" or not isinstance(card, dict):
            self.failed_runs.append("not an Adaptive Card")
        elif len(body) > self.MAX_BYTES:
            self.failed_runs.append(f"413: {len(body)} bytes")
        else:
            self.cards.append(card)

    def _routes(self, app: FastAPI) -> None:
        @app.post("/powerautomate/automations/direct/workflows/{workflow_id}/triggers/manual/paths/invoke")
        async def invoke(workflow_id: str, request: Request) -> Response:
            if workflow_id != self.workflow_id:
                return JSONResponse(
                    self.error("WorkflowNotFound", f"The workflow '{workflow_id}' could not be found."), 404
                )
            if request.query_params.get("sig") != self.sig:
                message = "The provided authentication token is not valid."
                return JSONResponse(self.error("DirectApiInvalidAuthorizationSignature", message), 401)
            body = await request.body()
            try:
                json.loads(body)
            except ValueError:
                kind = request.headers.get("content-type", "")
                message = (
                    f"The input body for trigger 'manual' of type 'Request' must be of type JSON, but was {kind!r}."
                )
                return JSONResponse(self.error("TriggerInputSchemaMismatch", message), 400)
            self._run(body)
            return Response(status_code=202)
