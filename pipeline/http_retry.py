"""How long a server asked us to wait: the one parser of Retry-After and of the rate-limit reset headers.

Reads header values only (strings), writes nothing. Every stage that talks HTTP (outreach channels, action providers,
notices, trigger sources) uses these, so `nan`, `inf`, `-1` or garbage mean the same everywhere: no usable value,
and the caller falls back to its own default wait.

- `retry_after_seconds` / `retry_after_moment`: Retry-After as RFC 9110 §10.2.3 defines it, delay-seconds (a
  non-negative integer) or an HTTP-date. A date in the past means "now" (0 seconds).
- `reset_seconds`: the non-standard reset headers some APIs send instead (X's `x-rate-limit-reset`, Unix epoch
  seconds; Mastodon's `X-RateLimit-Reset` and Zoom's daily-limit Retry-After, ISO 8601 times); `epoch_seconds`
  when the header is always a Unix time, `iso_moment` when it is always ISO 8601.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from pipeline.messages import as_utc

_DELAY_SECONDS = re.compile(r"[0-9]+")  # RFC 9110: delay-seconds = 1*DIGIT
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?")
_EPOCH_FROM = 1_000_000_000  # a number this large is a Unix time (2001 on), not a wait in seconds
_LONGEST = timedelta(days=365 * 100).total_seconds()  # beyond it a moment cannot be computed (datetime's range)


def retry_after_seconds(value: str | None, now: datetime | None = None, *, cap: float | None = None) -> float | None:
    """Seconds to wait per a Retry-After value; None when it has no usable value (absent, nan, inf, -1, 1.5, junk)."""
    parsed = _retry_after(value, now or datetime.now(UTC))
    if parsed is None:
        return None
    return _capped(parsed[0], cap)


def retry_after_moment(value: str | None, now: datetime | None = None) -> datetime | None:
    """The moment (UTC) a Retry-After value points at; None when it has no usable value."""
    now = now or datetime.now(UTC)
    parsed = _retry_after(value, now)
    if parsed is None:
        return None
    seconds, moment = parsed
    return moment or now + timedelta(seconds=min(seconds, _LONGEST))


def reset_seconds(value: str | None, now: datetime | None = None, *, cap: float | None = None) -> float | None:
    """Seconds until a rate-limit reset header's moment: Unix epoch seconds, a small number of seconds, or an
    ISO 8601 time (a zone-less one is UTC). None when it has no usable value."""
    text = (value or "").strip()
    if not text:
        return None
    now = now or datetime.now(UTC)
    if _NUMBER.fullmatch(text):
        number = float(text)
        if not math.isfinite(number):
            return None
        if number > _EPOCH_FROM:
            return _capped(max(number - now.timestamp(), 0.0), cap)
        return _capped(number, cap)
    moment = iso_moment(text)
    return None if moment is None else _capped(_seconds_until(moment, now), cap)


def epoch_seconds(value: str | None, now: float) -> float | None:
    """Seconds until the Unix time (epoch seconds) a header gives, as X's `x-rate-limit-reset` does; 0 when it is
    past, None when it is not a number."""
    text = (value or "").strip()
    if not _NUMBER.fullmatch(text) or not math.isfinite(number := float(text)):
        return None
    return max(number - now, 0.0)


def iso_moment(value: str | None) -> datetime | None:
    """An ISO 8601 time in UTC (a trailing Z or no zone both mean UTC); None when it is not one."""
    try:
        moment = datetime.fromisoformat((value or "").strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return as_utc(moment)


def _retry_after(value: str | None, now: datetime) -> tuple[float, datetime | None] | None:
    """(seconds, the HTTP-date if one was given) or None."""
    text = (value or "").strip()
    if not text:
        return None
    if _DELAY_SECONDS.fullmatch(text):
        seconds = float(text)  # a few hundred digits make inf rather than an error
        return (seconds, None) if math.isfinite(seconds) else None
    if not text[:1].isalpha():  # every HTTP-date form starts with the day name: "-1", "1.5", "+5" are not dates
        return None
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    moment = as_utc(moment)
    return _seconds_until(moment, now), moment


def _seconds_until(moment: datetime, now: datetime) -> float:
    return max((moment - as_utc(now)).total_seconds(), 0.0)


def _capped(seconds: float, cap: float | None) -> float:
    return seconds if cap is None else min(seconds, cap)
