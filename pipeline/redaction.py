"""Provider answers and transport errors shown to operators: secrets cut out, control characters flattened.

The one secret scrubber: `redact` for values we know (configured secrets, tokens fetched at run time),
`redact_bearer` for tokens we only see in someone else's text (tweepy's request logs).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import requests

_BEARER = re.compile(r"(Bearer\s+)[^\s'\",}]+")


def redact(text: str, secrets: Iterable[str], marker: str = "[redacted]") -> str:
    """`text` with every secret replaced by `marker`; the longest first, so a secret that starts another one
    cannot leave the other's tail behind."""
    for secret in sorted({secret for secret in secrets if secret}, key=len, reverse=True):
        text = text.replace(secret, marker)
    return text


def redact_bearer(text: str, marker: str = "[redacted]") -> str:
    """Any `Bearer <token>` in `text` with the token replaced by `marker`."""
    return _BEARER.sub(lambda match: match.group(1) + marker, text)


def printable(text: str, limit: int = 300) -> str:
    return "".join(c if c.isprintable() else " " for c in text).strip()[:limit]


class TimeoutSession(requests.Session):
    """For tweepy (reading shares, posting announcements): it passes no timeout, and requests waits forever without
    one, holding a worker thread."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # passed through as they came
        kwargs.setdefault("timeout", self.timeout)
        return super().request(*args, **kwargs)
