"""Announcements in a Microsoft Teams channel through a Workflows webhook (IMPROMPTU_TEAMS_WEBHOOK).

The rendered post is an Adaptive Card (JSON); it is wrapped in the message envelope Workflows expects. The flow
answers 202 with an empty body and runs later, so a card that Teams cannot show is never reported back: the card
is checked (JSON object, AdaptiveCard, size) before it is sent. The URL carries its signature (`sig=`), so the
whole URL is a secret: reasons only ever name its host.

Teams renders markdown in a TextBlock's text and a Fact's title and value, and the card carries text strangers wrote
(the article's title, author and summary, the sharer's name): `[Join here](https://evil.example)` would be a real
link under our name. Before sending, every markdown link in those texts is broken up so it shows as the text it is
(an invisible word joiner after its `]`), unless it leads to one of the post's own links (the join URL, the library
page, the article). Our buttons are Action.OpenUrl, which is not markdown and is left as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable
from typing import Any

import httpx
from pydantic import Field, SecretStr

from pipeline import http_retry
from pipeline.channels import base
from pipeline.channels.base import ChannelBroken, NotSent, Post, Posted, PostRefused, Problem, RateLimited
from pipeline.errors import PermanentError
from pipeline.settings import Settings

TEAMS_ENV = "IMPROMPTU_TEAMS_WEBHOOK"
# Teams' documented message limit is about 28 KB; whether the Workflows path enforces it is not documented, and
# a larger card would fail silently inside the flow, so it is refused here.
MAX_BYTES = 28_000
_RECREATE = f"create the workflow again and set {TEAMS_ENV}"
_TEMPLATES = "check the Teams announcement templates (IMPROMPTU_OUTREACH_TEMPLATES_DIR)"
_BROKEN = {401, 403, 404, 410}  # the flow was deleted or turned off, or the URL's signature is not valid
# `](url)`, `][ref]` and `]: url` (a reference definition) are how a `]` turns text into a link; whitespace
# between them is allowed by some markdown dialects, so it is crossed too
_LINK_AFTER_BRACKET = re.compile(r"\](?=\s*[(\[:])")
WORD_JOINER = "\u2060"  # invisible, not whitespace: `]` + it + `(` is no link in any markdown


class TeamsSettings(base.ChannelSettings):
    teams_webhook: SecretStr | None = Field(
        default=None, description='Teams Workflows webhook ("When a Teams webhook request is received").'
    )


class TeamsChannel(base.ChannelAdapter):
    """The rendered post is an Adaptive Card (JSON), checked by `shaped`, its size counted in UTF-8 bytes."""

    name = "teams"
    title = "Teams"
    Section = TeamsSettings
    limit = MAX_BYTES  # Teams refuses past ~28 KB (413)
    unit = "bytes"
    can_find = False
    can_delete = False

    @staticmethod
    def length(text: str) -> int:
        return len(text.encode("utf-8"))

    @classmethod
    def shaped(cls, text: str) -> tuple[str, Problem | None]:
        payload, problem = base.json_object(text)
        if payload is None:
            return text, problem
        text = json.dumps(payload, ensure_ascii=False)  # compact: template whitespace does not count
        return text, _teams_problem(payload)

    @staticmethod
    def readable(text: str) -> str:
        try:
            payload = json.loads(text)
        except ValueError:
            return text
        return base.readable_lines([payload.get("body", []), payload.get("actions", [])])

    @classmethod
    def from_settings(cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> TeamsChannel:
        section = TeamsSettings.of(settings)
        webhook = section.teams_webhook.get_secret_value() if section.teams_webhook else None
        return cls(webhook, timeout=section.outreach_timeout_seconds, transport=transport)

    def __init__(
        self, webhook: str | None, *, timeout: float = 15.0, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._hook = base.Webhook.at(webhook, "Teams workflow", timeout=timeout, transport=transport)
        self._where = self._hook.where

    def missing(self) -> list[str]:
        return base.unset({TEAMS_ENV: self._hook.url})

    async def post(self, post: Post) -> Posted:
        base.require("Teams", self.missing())
        return self._outcome(await self._hook.post_json(envelope(post.text, own_links(post))))

    async def find(self, post: Post) -> Posted | None:
        raise NotImplementedError("Teams workflow webhooks cannot read back what they posted (can_find is False)")

    async def delete(self, posted: Posted) -> None:
        raise PermanentError("Teams workflow webhooks cannot delete")

    def _outcome(self, response: httpx.Response) -> Posted:
        status = response.status_code
        if 200 <= status < 300:
            return Posted()  # 202: the flow accepted the card and posts it on its own time
        detail = f"HTTP {status}, {self._detail(response)}"
        if status == 429:
            retry_after = http_retry.retry_after_seconds(response.headers.get("retry-after"))
            raise RateLimited(f"{self._where} is throttling ({detail})", retry_after)
        if status >= 500:
            raise NotSent(f"{self._where} failed ({detail}); Power Automate may be having trouble")
        if status in _BROKEN or status < 400:
            what = "redirects elsewhere" if status < 400 else "refused the webhook: the flow was deleted or turned off"
            raise ChannelBroken(f"{self._where} {what} ({detail}); {_RECREATE}")
        if status == 413:
            raise PostRefused(f"{self._where}: the card is too large ({detail}); {_TEMPLATES}")
        raise PostRefused(f"{self._where} refused the card ({detail}); {_TEMPLATES}")

    def _detail(self, response: httpx.Response) -> str:
        """Power Automate's {"error": {"code", "message"}}, else the body as text."""
        body = base.json_or_none(response)
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            text = f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
        else:
            text = response.text
        return base.redact(base.printable(text), self._hook.secrets) or "no body"


def own_links(post: Post) -> set[str]:
    """The links a card may carry as markdown: the post's own (join URL or library page) and the article's."""
    session = post.session
    return {post.link, session.join_url, session.proposal.content.article.url} - {""}


def unlinked(text: str, allowed: Collection[str] = ()) -> str:
    """`text` with every markdown link broken up (shown as text), but for links to `allowed` URLs."""

    def bracket(match: re.Match[str]) -> str:
        rest = text[match.end() :]
        if any(rest.startswith(f"({url})") for url in allowed):
            return "]"
        return "]" + WORD_JOINER

    return _LINK_AFTER_BRACKET.sub(bracket, text)


def _unlink_card(node: Any, allowed: Collection[str]) -> Any:
    """The card with the markdown texts Teams renders (TextBlock text, Fact title and value) unlinked; every nested
    element (containers, columns, cards of Action.ShowCard) is walked."""
    if isinstance(node, list):
        return [_unlink_card(item, allowed) for item in node]
    if not isinstance(node, dict):
        return node
    copy = {key: _unlink_card(value, allowed) for key, value in node.items()}
    if node.get("type") == "TextBlock" and isinstance(copy.get("text"), str):
        copy["text"] = unlinked(copy["text"], allowed)
    if node.get("type") == "FactSet" and isinstance(copy.get("facts"), list):
        copy["facts"] = [_unlink_fact(fact, allowed) for fact in copy["facts"]]
    return copy


def _unlink_fact(fact: Any, allowed: Collection[str]) -> Any:
    if not isinstance(fact, dict):
        return fact
    markdown = {key: unlinked(fact[key], allowed) for key in ("title", "value") if isinstance(fact.get(key), str)}
    return fact | markdown


def envelope(card_json: str, allowed_links: Collection[str] = ()) -> bytes:
    """The Workflows message envelope around the rendered Adaptive Card, as UTF-8 JSON, its markdown links broken
    up but for `allowed_links`; PostRefused when the card is not an Adaptive Card object or the message would be
    larger than Teams takes."""
    try:
        card = json.loads(card_json)
    except ValueError as error:
        raise PostRefused(f"Teams: the rendered card is not JSON ({error}); {_TEMPLATES}") from None
    if not isinstance(card, dict) or card.get("type") != "AdaptiveCard":
        raise PostRefused(f'Teams: the rendered card is not an object with "type": "AdaptiveCard"; {_TEMPLATES}')
    card = _unlink_card(card, allowed_links)
    attachment = {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
    message = {"type": "message", "attachments": [attachment]}
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_BYTES:
        raise PostRefused(f"Teams: the card is {len(body)} bytes, over the {MAX_BYTES} Teams takes; {_TEMPLATES}")
    return body


def from_settings(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> TeamsChannel:
    return TeamsChannel.from_settings(settings, transport=transport)


# --- the Adaptive Card check ----------------------------------------------------------------------------------------


def _bad(detail: str) -> Problem:
    return Problem("bad_structure", detail)


def _teams_problem(card: dict[str, Any]) -> Problem | None:
    """An Adaptive Card: type, version, a non-empty body, a type on every element, links on OpenUrl actions."""
    if card.get("type") != "AdaptiveCard":
        return _bad('must be an Adaptive Card ("type": "AdaptiveCard")')
    if not isinstance(card.get("version"), str) or not card["version"]:
        return _bad('needs a "version" (1.4 works in every Teams client)')
    body = card.get("body")
    if not isinstance(body, list) or not body:
        return _bad('needs a non-empty "body"')
    return _elements_problem(body, "body") or _elements_problem(card.get("actions", []), "actions")


def _elements_problem(elements: object, where: str) -> Problem | None:
    if not isinstance(elements, list):
        return _bad(f"{where} must be a list")
    for index, element in enumerate(elements):
        here = f"{where}[{index}]"
        if not isinstance(element, dict) or not isinstance(element.get("type"), str) or not element["type"]:
            return _bad(f"{here} has no type")
        if element["type"] == "Action.OpenUrl" and not str(element.get("url", "")).startswith("http"):
            return _bad(f"{here} (Action.OpenUrl) needs an http(s) url")
        if element["type"] == "TextBlock" and not isinstance(element.get("text"), str):
            return _bad(f"{here} (TextBlock) needs a text")
        for key in ("items", "actions"):
            if key in element and (problem := _elements_problem(element[key], f"{here}.{key}")):
                return problem
        for column_index, column in enumerate(_list(element.get("columns"))):
            items = column.get("items", []) if isinstance(column, dict) else None
            if problem := _elements_problem(items, f"{here}.columns[{column_index}].items"):
                return problem
    return None


def _list(value: object) -> Iterable[Any]:
    return value if isinstance(value, list) else ()
