"""Provider answers and transport errors shown to operators: secrets cut out, control characters flattened."""

from __future__ import annotations

import requests


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def printable(text: str, limit: int = 300) -> str:
    return "".join(c if c.isprintable() else " " for c in text).strip()[:limit]


class TimeoutSession(requests.Session):
    """For tweepy (reading shares, posting announcements): it passes no timeout, and requests waits forever without
    one, holding a worker thread."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, *args: object, **kwargs: object) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout)
        return super().request(*args, **kwargs)  # type: ignore[arg-type]
