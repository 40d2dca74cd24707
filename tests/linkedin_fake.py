"""A local LinkedIn for tests: the Posts API, OpenID Connect userinfo and the OAuth 2 token endpoint, as documented.

- `POST /rest/posts` answers `201` with an empty body and the new URN in `x-restli-id`; `DELETE /rest/posts/{urn}`
  (URN percent-encoded) answers `204`, also for a post deleted before.
- `GET /v2/userinfo` (Bearer) answers `{"sub", "name", "given_name", "family_name", "picture", "locale"}`.
- `POST /oauth/v2/accessToken` (form: grant_type, code, redirect_uri, client_id, client_secret) answers
  `{"access_token", "expires_in", "scope", "token_type", "id_token"}` or `{"error", "error_description"}`.
- Errors use LinkedIn's body `{"status", "serviceErrorCode", "code", "message"}`; `fail(name)` makes the next post
  (or delete) get one of the documented answers in `ERRORS`.

Every request is recorded (`seen`) so tests assert on what went over HTTP; the versioned API checks the headers
LinkedIn requires (Bearer token, LinkedIn-Version, X-Restli-Protocol-Version: 2.0.0).

Usage:
    fake = FakeLinkedIn()
    with serve(fake.app) as base:
        channel = LinkedInChannel(access_token=fake.token, author=fake.author, api_url=base)
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

TOKEN = "AQV-fake-linkedin-access-token-VERY-SECRET"
CLIENT_ID = "86fakeclientid"
CLIENT_SECRET = "fake-linkedin-client-secret-VERY-SECRET"
REDIRECT_URI = "http://127.0.0.1:8000/linkedin/callback"
MEMBER_ID = "782bbtaQ"
VERSION = "202509"
COMMENTARY_LIMIT = 3000


def _error(status: int, message: str, code: str | None = None, service: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status, "message": message}
    if code is not None:
        body["code"] = code
    if service is not None:
        body["serviceErrorCode"] = service
    return body


# name -> (status, JSON body or raw text, headers): what LinkedIn answers in each documented case
ERRORS: dict[str, tuple[int, dict[str, Any] | str, dict[str, str]]] = {
    "revoked": (
        401,
        _error(401, "The token used in the request has been revoked by the user", "REVOKED_ACCESS_TOKEN", 65601),
        {},
    ),
    "expired": (401, _error(401, "The token used in the request is expired", "EXPIRED_ACCESS_TOKEN"), {}),
    "invalid_token": (401, _error(401, "Invalid access token", service=65600), {}),
    "access_denied": (
        403,
        _error(403, "Not enough permissions to access: partnerApiPostsExternal.CREATE.20250901", "ACCESS_DENIED", 100),
        {},
    ),
    "version_inactive": (426, _error(426, "Requested version 20240401 is not active", "NONEXISTENT_VERSION"), {}),
    "throttled": (
        429,
        _error(429, "Resource level throttle limit for calls to this resource is reached.", service=101),
        {},
    ),
    "throttled_retry_after": (
        429,
        _error(429, "Resource level throttle limit for calls to this resource is reached.", service=101),
        {"Retry-After": "120"},
    ),
    "server_error": (500, _error(500, "Internal Server Error"), {}),
    "unavailable": (503, "", {}),  # an empty body, as gateways send
    "bad_gateway_html": (502, "<html><body><h1>502 Bad Gateway</h1></body></html>", {"content-type": "text/html"}),
    "bad_request": (400, _error(400, "Invalid value for field; expected a URL: /content/article/source"), {}),
    "duplicate": (422, _error(422, "Content is a duplicate of urn:li:share:7300000000000000001"), {}),
    "empty_401": (401, "", {}),
    "not_json_400": (400, "{not json", {"content-type": "application/json"}),
}


@dataclass
class Seen:
    method: str
    path: str
    raw_path: str  # as sent, before percent-decoding
    url: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeLinkedIn:
    token: str = TOKEN
    member_id: str = MEMBER_ID
    active_versions: set[str] = field(default_factory=lambda: {VERSION})
    organizations: set[str] = field(default_factory=set)  # organization URNs the member may post as
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    redirect_uri: str = REDIRECT_URI
    expires_in: int = 5184000  # 60 days
    omit_created_id: bool = False  # answer 201 without x-restli-id
    delay: float = 0.0  # seconds before each answer (timeouts)
    seen: list[Seen] = field(default_factory=list)
    posts: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    codes: set[str] = field(default_factory=set)
    canned: dict[str, list[Response]] = field(default_factory=dict)

    @property
    def author(self) -> str:
        return f"urn:li:person:{self.member_id}"

    def fail(self, name: str, method: str = "POST") -> None:
        """The next `method` request to /rest/posts gets the documented answer `name` (see ERRORS)."""
        status, body, headers = ERRORS[name]
        content = body if isinstance(body, str) else json.dumps(body)
        media = headers.get("content-type", "application/json")
        extra = {k: v for k, v in headers.items() if k != "content-type"}
        self.canned.setdefault(method, []).append(
            Response(content=content, status_code=status, headers=extra, media_type=media)
        )

    def grant(self) -> str:
        """An authorization code, as LinkedIn's consent page would pass to the redirect URI."""
        code = "AQT" + secrets.token_urlsafe(24)
        self.codes.add(code)
        return code

    def rest(self) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith("/rest/")]

    @property
    def app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def record(request: Request, call_next: Any) -> Response:
            body = await request.body()
            raw_path = request.scope.get("raw_path", b"").decode("latin-1")
            self.seen.append(
                Seen(
                    request.method,
                    request.url.path,
                    raw_path,
                    str(request.url),
                    dict(request.query_params),
                    dict(request.headers),
                    body,
                )
            )
            if self.delay:
                await asyncio.sleep(self.delay)
            if request.url.path.startswith("/rest/posts") and self.canned.get(request.method):
                return self.canned[request.method].pop(0)
            if request.url.path.startswith(("/rest/", "/v2/")):
                refused = self._check_headers(request)
                if refused is not None:
                    return refused
            return await call_next(request)

        @app.post("/rest/posts")
        async def create(request: Request) -> Response:
            try:
                post = await request.json()
            except ValueError:
                return JSONResponse(_error(400, "Unable to parse the request body"), 400)
            if not isinstance(post, dict):
                return JSONResponse(_error(400, "Unable to parse the request body"), 400)
            if post.get("author") not in {self.author, *self.organizations}:
                message = f"Not enough permissions to post as {post.get('author')}"
                return JSONResponse(_error(403, message, "ACCESS_DENIED", 100), 403)
            problem = _invalid(post)
            if problem:
                return JSONResponse(_error(422, f"ERROR :: {problem}"), 422)
            for urn, earlier in self.posts.items():
                if earlier["commentary"] == post["commentary"]:
                    return JSONResponse(_error(422, f"Content is a duplicate of {urn}"), 422)
            urn = f"urn:li:share:{7300000000000000000 + len(self.posts) + len(self.deleted) + 1}"
            self.posts[urn] = post
            headers = {} if self.omit_created_id else {"x-restli-id": urn, "x-linkedin-id": urn}
            return Response(status_code=201, headers=headers)

        @app.delete("/rest/posts/{urn:path}")
        async def delete(urn: str, request: Request) -> Response:
            if ":" in request.scope.get("raw_path", b"").decode("latin-1").removeprefix("/rest/posts/"):
                return JSONResponse(_error(400, "Invalid URN in the path: percent-encode it"), 400)
            if urn in self.posts:
                self.deleted.add(urn)
                del self.posts[urn]
            if urn in self.deleted:
                return Response(status_code=204)  # deletes are idempotent
            return JSONResponse(_error(404, f"Not Found: {urn}", service=100), 404)

        @app.get("/v2/userinfo")
        async def userinfo() -> Response:
            return JSONResponse(
                {
                    "sub": self.member_id,
                    "name": "Ada Facilitator",
                    "given_name": "Ada",
                    "family_name": "Facilitator",
                    "picture": "https://media.licdn.com/dms/image/fake/profile.jpg",
                    "locale": {"country": "US", "language": "en"},
                }
            )

        @app.post("/oauth/v2/accessToken")
        async def access_token(request: Request) -> Response:
            form = await request.form()
            if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
                return JSONResponse(
                    {"error": "invalid_client", "error_description": "Client authentication failed"}, 401
                )
            code = form.get("code")
            valid = form.get("grant_type") == "authorization_code" and form.get("redirect_uri") == self.redirect_uri
            if not valid or not isinstance(code, str) or code not in self.codes:
                description = (
                    "Unable to retrieve access token: appid/redirect uri/code verifier does not match authorization "
                    "code. Or authorization code expired. Or external member binding exists"
                )
                return JSONResponse({"error": "invalid_request", "error_description": description}, 400)
            self.codes.discard(code)  # a code works once
            return JSONResponse(
                {
                    "access_token": self.token,
                    "expires_in": self.expires_in,
                    "scope": "openid,profile,w_member_social",
                    "token_type": "Bearer",
                    "id_token": "eyJ.fake.idtoken",
                }
            )

        return app

    def _check_headers(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse(_error(401, "Invalid access token", service=65600), 401)
        if request.url.path.startswith("/v2/"):
            return None  # the unversioned API needs only the token
        version = request.headers.get("linkedin-version")
        if not version:
            message = "A version must be present. Please specify a version by adding the LinkedIn-Version header."
            return JSONResponse(_error(400, message, "VERSION_MISSING"), 400)
        if version not in self.active_versions:
            return JSONResponse(_error(426, f"Requested version {version}01 is not active", "NONEXISTENT_VERSION"), 426)
        if request.headers.get("x-restli-protocol-version") != "2.0.0":  # the fake's own check: the docs require it
            return JSONResponse(_error(400, "X-Restli-Protocol-Version 2.0.0 is required"), 400)
        return None


def _invalid(post: dict[str, Any]) -> str | None:
    """What is wrong with an article post body, as a JSON path and reason; None when it is valid."""
    commentary = post.get("commentary")
    if not isinstance(commentary, str):
        return "/commentary :: field is required"
    if len(commentary) > COMMENTARY_LIMIT:
        return f"/commentary :: length {len(commentary)} exceeds the maximum {COMMENTARY_LIMIT}"
    if post.get("visibility") not in ("PUBLIC", "CONNECTIONS", "LOGGED_IN"):
        return "/visibility :: invalid value"
    distribution = post.get("distribution")
    if not isinstance(distribution, dict) or distribution.get("feedDistribution") not in ("MAIN_FEED", "NONE"):
        return "/distribution/feedDistribution :: invalid value"
    if post.get("lifecycleState") != "PUBLISHED":
        return "/lifecycleState :: must be PUBLISHED"
    content = post.get("content")
    article = content.get("article") if isinstance(content, dict) else None
    if not isinstance(article, dict) or not isinstance(article.get("source"), str):
        return "/content/article/source :: field is required"
    if not isinstance(article.get("title"), str) or not article["title"]:
        return "/content/article/title :: field is required"
    return None
