"""Pure slot logic: when a session can start, given who hosts it, their working hours and what they already host.

No I/O: the caller passes the facilitators (from the rules file) and their `Busy` time (approved, scheduled or live
sessions). Excluding a proposal's own session when it is edited is the caller's job: leave it out of `busy`
(`booked(records, except_id=...)` in pipeline/actions/service.py does).

Every time is compared in UTC; working hours, working days and daily caps are read in the facilitator's own time
zone (their `timezone`, else the rules file's, passed as `default_timezone`), so 09:00 in Europe/Berlin is 08:00
UTC in winter and 07:00 UTC in summer, and a day of the DST change is just shorter or longer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pipeline.domain.rules import WEEKDAYS, Facilitator, days_text
from pipeline.domain.sessions import first_slot
from pipeline.errors import ImpromptuError
from pipeline.messages import as_utc

DEFAULT_HORIZON_DAYS = 14
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class Busy:
    """A session already approved, scheduled or live for `facilitator` (a name): [starts_at, ends_at)."""

    facilitator: str
    starts_at: datetime
    ends_at: datetime
    title: str


@dataclass(frozen=True)
class Slot:
    """When a proposal's session starts and who hosts it, with the sentence a facilitator reads to see why."""

    facilitator: str | None  # who hosts; None when no facilitator is configured
    starts_at: datetime  # UTC, aware
    reason: str  # e.g. "30 min lead time", "after Ana's 'Live: X' session ending 14:00 Europe/Berlin"


class NoSlot(ImpromptuError):
    """No facilitator has a free slot within the horizon; the message says for whom and how far ahead."""


def _day(day: date) -> str:
    """'Tue 25 Nov', the same in every locale."""
    return f"{WEEKDAYS[day.weekday()].capitalize()} {day.day:02d} {_MONTHS[day.month - 1]}"


def _sessions(count: int) -> str:
    return "1 session" if count == 1 else f"{count} sessions"


def _names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


class _Calendar:
    """One facilitator's working time and booked sessions, in UTC."""

    def __init__(self, facilitator: Facilitator, busy: Sequence[Busy], default_timezone: str) -> None:
        self.name = facilitator.name
        self.zone: ZoneInfo = facilitator.zone(default_timezone)
        self.hours = facilitator.hours
        self.days = frozenset(WEEKDAYS.index(day) for day in facilitator.days)
        self.cap = facilitator.max_sessions_per_day
        # whole days join: a session may run past midnight into the next working day
        self.whole_day = self.hours is None or self.hours.whole_day
        self.busy = sorted(
            ((as_utc(b.starts_at), as_utc(b.ends_at), b) for b in busy if b.facilitator == facilitator.name),
            key=lambda entry: entry[:2],
        )
        self.per_day = Counter(self.local(starts).date() for starts, _, _ in self.busy)

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.zone)

    def at(self, day: date, clock: time) -> datetime:
        """`clock` on local `day`, in UTC (a clock time skipped by DST is read with the offset before the change)."""
        return datetime.combine(day, clock, tzinfo=self.zone).astimezone(UTC)

    def when(self, moment: datetime) -> str:
        local = self.local(moment)
        return f"{_day(local.date())} {local:%H:%M} {self.zone.key}"

    def works_on(self, day: date) -> bool:
        return day.weekday() in self.days

    @property
    def hours_text(self) -> str:
        if self.whole_day:
            return f"{self.name}'s working days ({days_text(WEEKDAYS[i] for i in self.days)})"
        return f"{self.name}'s working hours ({self.hours})"

    @property
    def schedule_text(self) -> str:
        every = days_text(WEEKDAYS[i] for i in sorted(self.days))
        return every if self.whole_day else f"{every}, {self.hours}"

    def window(self, day: date, until: datetime) -> tuple[datetime, datetime]:
        """Working time of local `day` (a working day), in UTC; whole days are joined with the next up to `until`."""
        if not self.whole_day:
            assert self.hours is not None
            end_day = day + timedelta(days=1) if self.hours.end == time(0) else day
            return self.at(day, self.hours.start), self.at(end_day, self.hours.end)
        end, following = self.at(day + timedelta(days=1), time(0)), day + timedelta(days=1)
        while end < until and self.works_on(following):
            following += timedelta(days=1)
            end = self.at(following, time(0))
        return self.at(day, time(0)), end

    def next_start(self, day: date) -> datetime:
        """Start of the first working time after local `day`."""
        for ahead in range(1, 8):
            following = day + timedelta(days=ahead)
            if self.works_on(following):
                return first_slot(self.at(following, self.hours.start if self.hours else time(0)), 0)
        raise AssertionError("a facilitator works at least one day a week")  # the rules model ensures it

    def overlapping(self, starts: datetime, ends: datetime) -> list[tuple[datetime, datetime, Busy]]:
        return [entry for entry in self.busy if entry[0] < ends and entry[1] > starts]

    def earliest(
        self, start: datetime, length: timedelta, limit: datetime, lead_reason: str
    ) -> tuple[datetime, str] | None:
        """The first start at or after `start` (and at most `limit`) that fits, with why; None when none does.

        Jumps, never steps: to the working time's start, past a booked session, to the next working day."""
        moment, reason = start, lead_reason
        minutes = int(length.total_seconds() // 60)
        while moment <= limit:
            day = self.local(moment).date()
            if not self.works_on(day):
                moment = self.next_start(day)
                reason = f"moved to {self.when(moment)}: {self.name} works {self.schedule_text}"
                continue
            opens, closes = self.window(day, moment + length)
            if moment < opens:
                moment = first_slot(opens, 0)
                reason = f"moved to {self.when(moment)}: {self.name}'s working hours start then"
                continue
            if moment + length > closes:
                moment = self.next_start(day)
                reason = f"moved to {self.when(moment)}: a {minutes} min session would end after {self.hours_text}"
                continue
            if self.cap is not None and (count := self.per_day[day]) >= self.cap:
                moment = self.next_start(day)
                reason = (
                    f"{self.name} has {_sessions(count)} on {_day(day)} (daily cap {self.cap}): "
                    f"moved to {self.when(moment)}"
                )
                continue
            if clash := self.overlapping(moment, moment + length):
                _, ends, booked = max(clash, key=lambda entry: entry[1])
                moment = first_slot(ends, 0)
                reason = f"after {self.name}'s {booked.title!r} session ending {self.local(ends):%H:%M} {self.zone.key}"
                continue
            return moment, reason
        return None

    def problem(self, starts: datetime, length: timedelta) -> str | None:
        local = self.local(starts)
        day, ends = local.date(), starts + length
        if not self.works_on(day):
            return (
                f"starts {_day(day)} {local:%H:%M} {self.zone.key}, not one of {self.name}'s working days "
                f"({days_text(WEEKDAYS[i] for i in self.days)})"
            )
        opens, closes = self.window(day, ends)
        if starts < opens:
            return f"starts {local:%H:%M} {self.zone.key}, before {self.hours_text}"
        if starts >= closes:
            return f"starts {local:%H:%M} {self.zone.key}, after {self.hours_text}"
        if ends > closes:
            local_end = self.local(ends)
            on = "" if local_end.date() == day else f"{_day(local_end.date())} "
            return f"ends {on}{local_end:%H:%M} {self.zone.key}, after {self.hours_text}"
        if self.cap is not None and (count := self.per_day[day]) >= self.cap:
            return f"{self.name} already has {_sessions(count)} on {_day(day)} (cap {self.cap})"
        for booked_start, booked_end, booked in self.overlapping(starts, ends):
            first, last = self.local(booked_start), self.local(booked_end)
            on = "" if first.date() == day else f"{_day(first.date())} "
            return f"overlaps {self.name}'s {booked.title!r} {on}{first:%H:%M}-{last:%H:%M} {self.zone.key}"
        return None

    def too_short_for(self, length: timedelta) -> bool:
        """Their working hours are shorter than a session of `length` (a normal day; DST days may differ)."""
        if self.whole_day or self.hours is None:
            return False
        opens = datetime.combine(date(2000, 1, 3), self.hours.start)
        closes = datetime.combine(date(2000, 1, 4) if self.hours.end == time(0) else date(2000, 1, 3), self.hours.end)
        return length > closes - opens


def suggest_slot(
    now: datetime,
    *,
    lead_minutes: int,
    duration_minutes: int,
    facilitators: Sequence[Facilitator],
    busy: Sequence[Busy],
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    default_timezone: str = "UTC",
) -> Slot:
    """The earliest start at least `lead_minutes` from now (next whole minute) that one of `facilitators` can host.

    For that facilitator the whole session lies in their working hours on a working day (in their time zone),
    overlaps none of their `busy` sessions and leaves their daily cap (sessions starting that local day) unbroken.
    The facilitator with the earliest such start hosts; on a tie, the first given. Without facilitators: the lead
    time alone. NoSlot when no start within `horizon_days` of `now` fits anyone. `default_timezone` is the rules
    file's `timezone`, for facilitators without their own."""
    now = as_utc(now)
    earliest = first_slot(now, lead_minutes)
    if not facilitators:
        return Slot(
            facilitator=None,
            starts_at=earliest,
            reason=f"{lead_minutes} min lead time (no facilitator hours configured)",
        )
    length, limit = timedelta(minutes=duration_minutes), now + timedelta(days=horizon_days)
    best: Slot | None = None
    for facilitator in facilitators:
        calendar = _Calendar(facilitator, busy, default_timezone)
        # only a strictly earlier start can beat the host found so far: search no further than that
        bound = limit if best is None else min(limit, best.starts_at - timedelta(microseconds=1))
        found = calendar.earliest(earliest, length, bound, f"{lead_minutes} min lead time")
        if found is not None:
            best = Slot(facilitator=facilitator.name, starts_at=found[0], reason=found[1])
    if best is not None:
        return best
    names = list(dict.fromkeys(f.name for f in facilitators))
    short = [c.hours_text for f in facilitators if (c := _Calendar(f, (), default_timezone)).too_short_for(length)]
    why = f" (a {duration_minutes} min session is longer than {' and '.join(dict.fromkeys(short))})" if short else ""
    days = f"{horizon_days} day" if horizon_days == 1 else f"{horizon_days} days"
    raise NoSlot(f"no free slot for {_names(names)} in the next {days}{why}")


def slot_problem(
    starts_at: datetime,
    duration_minutes: int,
    facilitator: Facilitator | None,
    busy: Sequence[Busy],
    now: datetime,
    *,
    default_timezone: str = "UTC",
) -> str | None:
    """Why `facilitator` cannot host a session at `starts_at` (a phrase about the start time), or None if they can.

    In order: in the past; outside their working days or hours; their daily cap reached; overlapping one of their
    `busy` sessions (leave the session being edited out of `busy`). Without a facilitator only the past is checked."""
    starts = as_utc(starts_at)
    if starts <= as_utc(now):
        return "is in the past"
    if facilitator is None:
        return None
    return _Calendar(facilitator, busy, default_timezone).problem(starts, timedelta(minutes=duration_minutes))
