"""Announcements in a Slack channel through an incoming webhook (IMPROMPTU_SLACK_WEBHOOK).

The rendered post is the webhook's JSON body (`{"text": ..., "blocks": [...]}`), sent as it is. Slack answers
200 "ok", or an error string in a plain-text body: 429 and 5xx are worth another try, payload errors refuse this
post, and every other error (revoked webhook, archived or deleted channel, a disabled workspace) breaks the
channel until someone sets a new webhook. A webhook can neither read back nor delete what it posted.
The whole webhook URL is a secret: reasons only ever name its host.
"""

from __future__ import annotations

import json

import httpx

from pipeline import http_retry
from pipeline.domain import notify
from pipeline.errors import PermanentError, RetryableError
from pipeline.outreach.channels import base
from pipeline.outreach.channels.base import ChannelBroken, NotSent, Post, Posted, PostRefused, RateLimited
from pipeline.settings import Settings

SLACK_ENV = "IMPROMPTU_SLACK_WEBHOOK"
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


class SlackChannel:
    name = "slack"
    can_find = False
    can_delete = False

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
    webhook = settings.slack_webhook.get_secret_value() if settings.slack_webhook else None
    return SlackChannel(webhook, timeout=settings.outreach_timeout_seconds, transport=transport)
