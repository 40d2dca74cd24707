"""The signature and timestamp checks of our HMAC-signed webhooks (`POST /shares`, `POST /webhooks/recordings`).

A sender signs `"<timestamp>." + raw body` with HMAC-SHA256 and the shared secret, and sends

    X-Impromptu-Timestamp: <Unix seconds>
    X-Impromptu-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

A request whose timestamp is more than REPLAY_SECONDS from now (either way) is refused, so a request someone copied
cannot be sent again later; within that window a replay is the same message id, which JetStream acknowledges as a
duplicate. Reasons never include a signature or the secret. No I/O: the routes read the body and the headers.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

SIGNATURE_HEADER = "X-Impromptu-Signature"
TIMESTAMP_HEADER = "X-Impromptu-Timestamp"
SIGNATURE_PREFIX = "sha256="
REPLAY_SECONDS = 300


def digest(secret: bytes, timestamp: str, body: bytes) -> bytes:
    """HMAC-SHA256(secret, timestamp + "." + body), raw: hex for our headers, base64 for 8x8 JaaS's."""
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).digest()


def sign(secret: bytes, timestamp: str, body: bytes) -> dict[str, str]:
    """The headers a sender puts on `body` at `timestamp` (Unix seconds, as text)."""
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: SIGNATURE_PREFIX + digest(secret, timestamp, body).hex()}


def sign_untimed(secret: bytes, body: bytes) -> str:
    """The X-Impromptu-Signature of the older body-only form (no timestamp), which `POST /shares` takes only when
    the operator allows it: such a request can be replayed at any time."""
    return SIGNATURE_PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def same(expected: bytes, given: str) -> bool:
    # Starlette decodes headers as latin-1; compare bytes, since compare_digest refuses non-ASCII str.
    return hmac.compare_digest(expected, given.encode("latin-1"))


def timestamp_problem(timestamp: str, now: float) -> str | None:
    """Why `timestamp` is not a signed time near `now` (None when it is)."""
    if not timestamp.isdigit() or len(timestamp) > 12:
        return f"missing or malformed {TIMESTAMP_HEADER} (Unix seconds, signed with the body)"
    if abs(now - int(timestamp)) > REPLAY_SECONDS:
        return f"the timestamp is more than {REPLAY_SECONDS} s from now: a replay, or a clock to set right"
    return None


def signature_problem(secret: bytes, headers: Mapping[str, str], body: bytes, now: float) -> str | None:
    """Why the request (`headers` with lowercase names) is not signed now with `secret`; None when it is."""
    header = headers.get(SIGNATURE_HEADER.lower(), "")
    if not header.startswith(SIGNATURE_PREFIX):
        return f"missing {SIGNATURE_HEADER}: {SIGNATURE_PREFIX}<hex HMAC-SHA256 of timestamp.body>"
    timestamp = headers.get(TIMESTAMP_HEADER.lower(), "")
    if problem := timestamp_problem(timestamp, now):
        return problem
    if not same(digest(secret, timestamp, body).hex().encode(), header.removeprefix(SIGNATURE_PREFIX)):
        return "signature does not match the timestamp and body"
    return None


def untimed_signature_problem(secret: bytes, body: bytes, header: str | None) -> str | None:
    """Why `header` is not the body-only signature of `body` (None when it is)."""
    if header is None or not header.startswith(SIGNATURE_PREFIX):
        return f"missing {SIGNATURE_HEADER}: {SIGNATURE_PREFIX}<hex HMAC-SHA256 of the raw body>"
    if not same(sign_untimed(secret, body).encode(), header):
        return "signature does not match the body"
    return None
