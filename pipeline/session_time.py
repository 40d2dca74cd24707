"""A session's time as people read it: the date and time in the session's time zone, with UTC beside it.

"Live at 20:27 UTC" says neither which day nor what time it is where the reader lives. Announcements and notices say
"Fri 11 Dec, 09:00 CET (08:00 UTC)": the session's zone (the rules file's `timezone`, carried on the proposal) for
the people it was planned for, UTC for everyone else. In UTC itself the time is written once; when the UTC date
differs from the local one, the UTC part names its own date.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_UTC_ZONE = ZoneInfo("UTC")


def zone_named(name: str | None) -> ZoneInfo:
    """The IANA zone `name`; UTC for none, or for a name this machine does not know (a message is not refused)."""
    try:
        return ZoneInfo(name) if name else _UTC_ZONE
    except (ZoneInfoNotFoundError, ValueError):
        return _UTC_ZONE


def _is_utc(zone: ZoneInfo) -> bool:
    return zone.key in ("UTC", "Etc/UTC", "Etc/Universal", "Universal", "Zulu", "Etc/Zulu")


def zone_abbreviation(moment: datetime) -> str:
    """ "CET", "EDT"; "UTC+05:30" where the zone has no letters of its own (tzdata writes "+0530")."""
    name = moment.tzname() or ""
    if name and name[0].isalpha():
        return name
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign, minutes = ("+" if minutes >= 0 else "-"), abs(minutes)
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}" if minutes % 60 else f"UTC{sign}{minutes // 60}"


def day(moment: datetime) -> str:
    """ "Fri 11 Dec" """
    return f"{moment:%a} {moment.day} {moment:%b}"


def clock(moment: datetime) -> str:
    return f"{moment:%H:%M}"


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment  # a naive time on the bus is UTC


def when(starts_at: datetime, timezone: str | None, ends_at: datetime | None = None) -> str:
    """ "Fri 11 Dec, 09:00 CET (08:00 UTC)"; with `ends_at`, "Fri 11 Dec, 09:00–10:00 CET (08:00–09:00 UTC)"."""
    zone = zone_named(timezone)
    starts_at, ends_at = _aware(starts_at), _aware(ends_at) if ends_at else None
    start_utc = starts_at.astimezone(UTC)
    local = starts_at.astimezone(zone)
    local_span = clock(local) + (f"–{clock(ends_at.astimezone(zone))}" if ends_at else "")
    utc_span = clock(start_utc) + (f"–{clock(ends_at.astimezone(UTC))}" if ends_at else "")
    if _is_utc(zone):
        return f"{day(start_utc)}, {utc_span} UTC"
    utc_day = f"{day(start_utc)}, " if start_utc.date() != local.date() else ""
    return f"{day(local)}, {local_span} {zone_abbreviation(local)} ({utc_day}{utc_span} UTC)"


def when_local(starts_at: datetime, timezone: str | None) -> str:
    """ "Fri 11 Dec, 09:00 CET": the session's zone only."""
    local = _aware(starts_at).astimezone(zone_named(timezone))
    return f"{day(local)}, {clock(local)} {zone_abbreviation(local)}"
