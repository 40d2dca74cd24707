"""Announcements in a Slack channel through an incoming webhook (IMPROMPTU_SLACK_WEBHOOK).

The rendered post is the webhook's JSON body (`{"text": ..., "blocks": [...]}`), sent as it is. Slack answers
200 "ok", or an error string in a plain-text body: 429 and 5xx are worth another try, payload errors refuse this
post, and every other error (revoked webhook, archived or deleted channel, a disabled workspace) breaks the
channel until someone sets a new webhook. A webhook can neither read back nor delete what it posted.
The whole webhook URL is a secret: reasons only ever name its host.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import Field, SecretStr

from pipeline import http_retry
from pipeline.channels import base
from pipeline.channels.base import ChannelBroken, NotSent, Post, Posted, PostRefused, Problem, RateLimited
from pipeline.domain import notify
from pipeline.errors import PermanentError, RetryableError
from pipeline.settings import Settings

SLACK_ENV = "IMPROMPTU_SLACK_WEBHOOK"
# Block Kit's limits, checked before posting (an incoming webhook refuses the whole message)
SLACK_MAX_BLOCKS = 50
SLACK_HEADER_MAX = 150
SLACK_SECTION_MAX = 3000
SLACK_FIELD_MAX = 2000
SLACK_BUTTON_MAX = 75
SLACK_LINK = re.compile(r"<(https?://[^|>]+)\|([^>]+)>")  # mrkdwn's <url|label>
_TEMPLATES = "check the Slack announcement templates (IMPROMPTU_OUTREACH_TEMPLATES_DIR)"
# Errors about the message itself: this post is refused, the webhook and channel are fine.
_PAYLOAD_ERRORS: dict[str, str] = {
    "invalid_payload": f"Slack could not read the announcement; {_TEMPLATES}",
    "invalid_blocks": f"Slack refused the announcement's blocks; {_TEMPLATES}",
    "invalid_blocks_format": f"Slack refused the announcement's blocks; {_TEMPLATES}",
    "no_text": f"the announcement had no text; {_TEMPLATES}",
    "too_many_attachments": f"the announcement has too many attachments; {_TEMPLATES}",
    "msg_blocks_too_long": f"the announcement's blocks are too long; {_TEMPLATES}",
}
# Same Slack meanings as the facilitators' notices, pointing at this webhook's variable.
_HINTS: dict[str, str] = {
    code: hint.replace(notify.SLACK_ENV, SLACK_ENV) for code, hint in notify.SLACK_HINTS.items()
} | _PAYLOAD_ERRORS


class SlackSettings(base.ChannelSettings):
    slack_webhook: SecretStr | None = Field(default=None, description="Slack incoming webhook for announcements.")


class SlackChannel(base.ChannelAdapter):
    """The rendered post is the webhook's JSON body: Block Kit, checked by `shaped`; no length limit of its own."""

    name = "slack"
    title = "Slack"
    Section = SlackSettings
    can_find = False
    can_delete = False

    @classmethod
    def shaped(cls, text: str) -> tuple[str, Problem | None]:
        payload, problem = base.json_object(text)
        if payload is None:
            return text, problem
        text = json.dumps(payload, ensure_ascii=False)  # compact: template whitespace does not count
        return text, _slack_problem(payload)

    @staticmethod
    def readable(text: str) -> str:
        try:
            payload = json.loads(text)
        except ValueError:
            return text
        shown = base.readable_lines(payload.get("blocks", []))
        # Slack's mrkdwn: <url|label> links and &amp; &lt; &gt; escapes
        shown = SLACK_LINK.sub(r"\2 (\1)", shown)
        return shown.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")

    @classmethod
    def from_settings(cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> SlackChannel:
        section = SlackSettings.of(settings)
        webhook = section.slack_webhook.get_secret_value() if section.slack_webhook else None
        return cls(webhook, timeout=section.outreach_timeout_seconds, transport=transport)

    def __init__(
        self, webhook: str | None, *, timeout: float = 15.0, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._hook = base.Webhook.at(webhook, "Slack webhook", timeout=timeout, transport=transport)
        self._where = self._hook.where

    def missing(self) -> list[str]:
        return base.unset({SLACK_ENV: self._hook.url})

    async def post(self, post: Post) -> Posted:
        base.require("Slack", self.missing())
        return self._outcome(await self._hook.post_json(_payload(post.text)))

    async def find(self, post: Post) -> Posted | None:
        raise NotImplementedError("Slack incoming webhooks cannot read back what they posted (can_find is False)")

    async def delete(self, posted: Posted) -> None:
        raise PermanentError("Slack incoming webhooks cannot delete")

    def _outcome(self, response: httpx.Response) -> Posted:
        status = response.status_code
        code = base.redact(base.printable(response.text), self._hook.secrets) or "(no body)"
        if 200 <= status < 300:
            if code == "ok":
                return Posted()
            # Slack always says "ok"; something else answered (a proxy?), so whether Slack got it is unknown
            raise RetryableError(f"{self._where} answered HTTP {status} {code!r}, not 'ok'; it may have posted")
        if status == 429:
            retry_after = http_retry.retry_after_seconds(response.headers.get("retry-after"))
            raise RateLimited(f"{self._where} is rate limiting (HTTP 429, {code})", retry_after)
        if status >= 500:
            raise NotSent(f"{self._where} failed (HTTP {status}, {code}); Slack may be having trouble")
        if code in _PAYLOAD_ERRORS or (status == 400 and code not in _HINTS):
            hint = _HINTS.get(code, f"Slack refused the announcement; {_TEMPLATES}")
            raise PostRefused(f"{self._where} refused the announcement (HTTP {status}) {code}: {hint}")
        hint = _HINTS.get(code, f"Slack refused the webhook; check it in Slack's app settings and {SLACK_ENV}")
        raise ChannelBroken(f"{self._where} refused the announcement (HTTP {status}) {code}: {hint}")


def _payload(text: str) -> bytes:
    """The rendered payload as it will be sent, once it is known to be a JSON object (Slack would refuse it)."""
    try:
        payload = json.loads(text)
    except ValueError as error:
        raise PostRefused(f"Slack: the rendered announcement is not JSON ({error}); {_TEMPLATES}") from None
    if not isinstance(payload, dict):
        raise PostRefused(f"Slack: the rendered announcement is not a JSON object; {_TEMPLATES}")
    return text.encode("utf-8")


def from_settings(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> SlackChannel:
    return SlackChannel.from_settings(settings, transport=transport)


# --- the Block Kit check --------------------------------------------------------------------------------------------


def _bad(detail: str) -> Problem:
    return Problem("bad_structure", detail)


def _text_object_problem(value: object, where: str, limit: int, *, plain_only: bool = False) -> Problem | None:
    """A Block Kit text object: {"type": "plain_text" | "mrkdwn", "text": "..."} within `limit` characters."""
    kinds = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if not isinstance(value, dict) or value.get("type") not in kinds:
        return _bad(f"{where} must be a text object of type {' or '.join(kinds)}")
    text = value.get("text")
    if not isinstance(text, str) or not text.strip():
        return _bad(f"{where} has no text")
    if len(text) > limit:
        return Problem("too_long", f"{where} has {len(text)} characters, Slack allows {limit}")
    return None


def _elements(block: dict[str, Any], where: str, most: int) -> tuple[list[Any], Problem | None]:
    elements = block.get("elements")
    if not isinstance(elements, list) or not 1 <= len(elements) <= most:
        return [], _bad(f"{where} needs 1 to {most} elements")
    return elements, None


def _slack_header(block: dict[str, Any], where: str) -> Problem | None:
    return _text_object_problem(block.get("text"), f"{where} text", SLACK_HEADER_MAX, plain_only=True)


def _slack_section(block: dict[str, Any], where: str) -> Problem | None:
    if "text" not in block and "fields" not in block:
        return _bad(f"{where} needs text or fields")
    if "text" in block and (problem := _text_object_problem(block["text"], f"{where} text", SLACK_SECTION_MAX)):
        return problem
    fields = block.get("fields", [])
    if not isinstance(fields, list) or len(fields) > 10:
        return _bad(f"{where} fields must be a list of at most 10")
    for index, field in enumerate(fields):
        if problem := _text_object_problem(field, f"{where} field {index}", SLACK_FIELD_MAX):
            return problem
    return None


def _slack_actions(block: dict[str, Any], where: str) -> Problem | None:
    elements, problem = _elements(block, where, 25)
    if problem:
        return problem
    for index, element in enumerate(elements):
        if not isinstance(element, dict) or not isinstance(element.get("type"), str):
            return _bad(f"{where} element {index} has no type")
        if element["type"] == "button":
            label = f"{where} button {index}"
            if problem := _text_object_problem(element.get("text"), label, SLACK_BUTTON_MAX, plain_only=True):
                return problem
            if "url" in element and not (isinstance(element["url"], str) and element["url"].startswith("http")):
                return _bad(f"{label} url must be an http(s) URL")
    return None


def _slack_context(block: dict[str, Any], where: str) -> Problem | None:
    elements, problem = _elements(block, where, 10)
    if problem:
        return problem
    for index, element in enumerate(elements):
        if isinstance(element, dict) and element.get("type") == "image":
            continue
        if problem := _text_object_problem(element, f"{where} element {index}", SLACK_SECTION_MAX):
            return problem
    return None


def _slack_image(block: dict[str, Any], where: str) -> Problem | None:
    if not isinstance(block.get("image_url"), str) or not isinstance(block.get("alt_text"), str):
        return _bad(f"{where} needs image_url and alt_text")
    return None


_SLACK_BLOCKS: dict[str, Callable[[dict[str, Any], str], Problem | None]] = {
    "header": _slack_header,
    "section": _slack_section,
    "actions": _slack_actions,
    "context": _slack_context,
    "image": _slack_image,
    "divider": lambda block, where: None,
    # accepted as they are: rarely used in announcements, and Slack checks them itself
    "rich_text": lambda block, where: None,
    "markdown": lambda block, where: None,
}


def _slack_problem(payload: dict[str, Any]) -> Problem | None:
    """An incoming-webhook message: a fallback `text` and at most 50 known blocks within their limits."""
    if not isinstance(payload.get("text"), str) or not payload["text"].strip():
        return _bad('needs a non-empty "text" (the notification fallback)')
    blocks = payload.get("blocks")
    if not isinstance(blocks, list):
        return _bad('needs "blocks", a list')
    if len(blocks) > SLACK_MAX_BLOCKS:
        return _bad(f"has {len(blocks)} blocks, Slack allows {SLACK_MAX_BLOCKS}")
    for index, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        validate = _SLACK_BLOCKS.get(kind) if isinstance(kind, str) else None
        if validate is None:
            return _bad(f"block {index} has an unknown type {kind!r} (known: {', '.join(_SLACK_BLOCKS)})")
        assert isinstance(block, dict)
        if len(str(block.get("block_id", ""))) > 255:
            return _bad(f"block {index} ({kind}) has a block_id over 255 characters")
        if problem := validate(block, f"block {index} ({kind})"):
            return problem
    return None
