"""Facilitators' working hours in the rules file, and the slot a proposal suggests (pipeline/domain/slots.py)."""

from __future__ import annotations

import time as clock
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.domain.rules import WEEKDAYS, Facilitator, WorkingHours, days_text, load_rules
from pipeline.domain.sessions import first_slot
from pipeline.domain.slots import Busy, NoSlot, Slot, slot_problem, suggest_slot
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BERLIN = ZoneInfo("Europe/Berlin")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def berlin(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=BERLIN).astimezone(UTC)  # type: ignore[misc]


ANA = Facilitator(name="Ana", timezone="Europe/Berlin", hours="09:00-17:30", days="mon-fri")  # type: ignore[arg-type]
TUESDAY = date(2025, 11, 25)  # Tue 25 Nov 2025; Berlin is UTC+1 (CET)


def busy(name: str, starts: datetime, minutes: int = 60, title: str = "Live: X") -> Busy:
    return Busy(facilitator=name, starts_at=starts, ends_at=starts + timedelta(minutes=minutes), title=title)


def suggest(now: datetime, *facilitators: Facilitator, taken: list[Busy] | None = None, **options: int) -> Slot:
    settings = {"lead_minutes": 30, "duration_minutes": 60} | options
    return suggest_slot(now, facilitators=facilitators, busy=taken or [], **settings)


# --- the rules file: new facilitator fields --------------------------------------------------------------------


def load_error(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    return path, str(caught.value)


def test_facilitator_fields_load_with_defaults_and_shorthands(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "timezone: Europe/London\nfacilitators:\n"
        "  - {name: Ana, timezone: Europe/Berlin, hours: '9:00-17:30', days: Mon-Fri, max_sessions_per_day: 3}\n"
        "  - {name: Ben, hours: {start: '18:00', end: '24:00'}, days: [sun, wed-thu, sun]}\n"
        "  - {name: Cy}\n",
        encoding="utf-8",
    )
    ana, ben, cy = load_rules(path).facilitators
    assert ana.hours == WorkingHours(start=time(9), end=time(17, 30)) and str(ana.hours) == "09:00-17:30"
    assert ana.days == ["mon", "tue", "wed", "thu", "fri"] and ana.max_sessions_per_day == 3
    assert ana.zone("Europe/London") == BERLIN
    assert ben.hours is not None and str(ben.hours) == "18:00-24:00" and ben.days == ["wed", "thu", "sun"]
    assert ben.timezone is None and ben.zone("Europe/London") == ZoneInfo("Europe/London")  # the file's zone
    assert cy.hours is None and cy.days == list(WEEKDAYS) and cy.max_sessions_per_day is None


def test_the_commented_example_in_examples_rules_yaml_is_valid(tmp_path: Path) -> None:
    text = (ROOT / "examples/rules.yaml").read_text(encoding="utf-8")
    for field in ("timezone: Europe/Berlin", 'hours: "09:00-17:30"', "days: mon-fri", "max_sessions_per_day: 3"):
        assert f"    # {field}" in text
        text = text.replace(f"    # {field}", f"    {field}")
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    ana = load_rules(path).facilitators[0]
    assert (ana.timezone, str(ana.hours), ana.days[-1], ana.max_sessions_per_day) == (
        "Europe/Berlin",
        "09:00-17:30",
        "fri",
        3,
    )


def test_hours_that_wrap_midnight_point_at_the_field(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, "facilitators:\n  - name: Ana\n    hours: 22:00-06:00\n")
    assert message == (
        f"{path}:3:12: facilitators.0.hours: '22:00-06:00' wraps midnight: working hours must end after they start, "
        "on the same day (e.g. 09:00-17:30; 24:00 for midnight)"
    )


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("hours: '09:00-09:00'", "facilitators.0.hours: '09:00-09:00' is empty: working hours must end after"),
        ("hours: 9-5", "facilitators.0.hours: '9-5' is not HH:MM-HH:MM (e.g. 09:00-17:30)"),
        ("hours: '08:00-25:00'", "facilitators.0.hours.end: Input should be in a valid time format"),
        ("hours: {start: '10:00', end: '09:00'}", "facilitators.0.hours: '10:00-09:00' wraps midnight"),
        ("days: [mon, funday]", "facilitators.0.days.1: Input should be 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'"),
        ("days: []", "facilitators.0.days: List should have at least 1 item"),
        (
            "timezone: Europe/Berln",
            "facilitators.0.timezone: unknown time zone 'Europe/Berln' (did you mean Europe/Berlin",
        ),
        ("max_sessions_per_day: 0", "facilitators.0.max_sessions_per_day: Input should be greater than or equal to 1"),
    ],
)
def test_facilitator_field_errors_name_file_line_and_field(tmp_path: Path, field: str, expected: str) -> None:
    path, message = load_error(tmp_path, f"facilitators:\n  - name: Ana\n    {field}\n")
    assert message.startswith(f"{path}:3:") and expected in message, message


def test_days_text_joins_runs_in_week_order() -> None:
    assert days_text(["fri", "mon", "tue", "wed", "thu"]) == "mon-fri"
    assert days_text(["sun", "mon", "wed", "thu", "fri"]) == "mon, wed-fri, sun"
    assert days_text(["sat", "sun"]) == "sat, sun"
    assert days_text(WEEKDAYS) == "every day"


# --- suggest_slot ----------------------------------------------------------------------------------------------


def test_without_facilitators_the_lead_time_alone() -> None:
    now = utc(2025, 11, 25, 10, 0, 12)
    assert suggest(now) == Slot(None, utc(2025, 11, 25, 10, 31), "30 min lead time (no facilitator hours configured)")


def test_a_free_facilitator_without_hours_takes_the_lead_time() -> None:
    now = utc(2025, 11, 25, 3, 7, 30)
    slot = suggest(now, Facilitator(name="Ben"))
    assert slot == Slot("Ben", first_slot(now, 30), "30 min lead time")
    assert slot.starts_at == utc(2025, 11, 25, 3, 38) and slot.starts_at.tzinfo is UTC


def test_before_working_hours_moves_to_their_start() -> None:
    slot = suggest(berlin(2025, 11, 25, 6, 0), ANA)
    assert slot == Slot(
        "Ana", berlin(2025, 11, 25, 9, 0), "moved to Tue 25 Nov 09:00 Europe/Berlin: Ana's working hours start then"
    )
    assert slot.starts_at == utc(2025, 11, 25, 8, 0)


def test_a_session_that_would_end_after_hours_moves_to_the_next_working_day() -> None:
    slot = suggest(berlin(2025, 11, 25, 16, 10), ANA)  # 16:40 + 60 min ends 17:40, after 17:30
    assert slot.starts_at == berlin(2025, 11, 26, 9, 0)
    assert slot.reason == (
        "moved to Wed 26 Nov 09:00 Europe/Berlin: a 60 min session would end after Ana's working hours (09:00-17:30)"
    )
    assert suggest(berlin(2025, 11, 25, 16, 0), ANA).starts_at == berlin(2025, 11, 25, 16, 30)  # ends 17:30: fits


def test_the_weekend_moves_to_monday() -> None:
    slot = suggest(berlin(2025, 11, 29, 11, 0), ANA)  # Saturday
    assert slot.starts_at == berlin(2025, 12, 1, 9, 0)
    assert slot.reason == "moved to Mon 01 Dec 09:00 Europe/Berlin: Ana works mon-fri, 09:00-17:30"
    friday_evening = suggest(berlin(2025, 11, 28, 17, 0), ANA)
    assert friday_evening.starts_at == berlin(2025, 12, 1, 9, 0)


def test_a_busy_session_pushes_the_slot_to_its_end() -> None:
    taken = [busy("Ana", berlin(2025, 11, 25, 10, 0), 60, "Live: Leadership")]
    slot = suggest(berlin(2025, 11, 25, 9, 45), ANA, taken=taken)  # 10:15 overlaps 10:00-11:00
    assert slot == Slot(
        "Ana", berlin(2025, 11, 25, 11, 0), "after Ana's 'Live: Leadership' session ending 11:00 Europe/Berlin"
    )


def test_back_to_back_and_overlapping_busy_sessions_are_jumped_in_one_go() -> None:
    taken = [
        busy("Ana", berlin(2025, 11, 25, 10, 0), 90),
        busy("Ana", berlin(2025, 11, 25, 11, 0), 60, "Live: Y"),  # overlaps the first, ends later
        busy("Ana", berlin(2025, 11, 25, 12, 30), 30, "Live: Z"),  # a 30 min gap before it: too short for 60
    ]
    slot = suggest(berlin(2025, 11, 25, 9, 45), ANA, taken=taken)
    assert slot.starts_at == berlin(2025, 11, 25, 13, 0) and "'Live: Z' session ending 13:00" in slot.reason
    assert suggest(berlin(2025, 11, 25, 9, 45), ANA, taken=taken, duration_minutes=30).starts_at == berlin(
        2025, 11, 25, 12, 0
    )


def test_a_busy_session_ending_mid_minute_rounds_up_to_the_next_minute() -> None:
    taken = [Busy("Ana", berlin(2025, 11, 25, 10, 0), berlin(2025, 11, 25, 11, 0) + timedelta(seconds=20), "Live: X")]
    assert suggest(berlin(2025, 11, 25, 9, 45), ANA, taken=taken).starts_at == berlin(2025, 11, 25, 11, 1)


def test_other_facilitators_busy_time_does_not_count() -> None:
    taken = [busy("Ben", berlin(2025, 11, 25, 10, 0)), busy("Ana ", berlin(2025, 11, 25, 10, 0))]
    assert suggest(berlin(2025, 11, 25, 9, 45), ANA, taken=taken).starts_at == berlin(2025, 11, 25, 10, 15)


def test_the_daily_cap_moves_to_the_next_day() -> None:
    capped = ANA.model_copy(update={"max_sessions_per_day": 3})
    taken = [busy("Ana", berlin(2025, 11, 25, hour, 0), 30) for hour in (9, 10, 11)]
    slot = suggest(berlin(2025, 11, 25, 12, 0), capped, taken=taken)
    assert slot.starts_at == berlin(2025, 11, 26, 9, 0)
    assert slot.reason == "Ana has 3 sessions on Tue 25 Nov (daily cap 3): moved to Wed 26 Nov 09:00 Europe/Berlin"
    assert suggest(berlin(2025, 11, 25, 12, 0), capped, taken=taken[:2]).starts_at == berlin(2025, 11, 25, 12, 30)


def test_the_daily_cap_counts_days_in_the_facilitators_time_zone() -> None:
    night_owl = Facilitator(name="Ana", timezone="Europe/Berlin", max_sessions_per_day=1)
    taken = [busy("Ana", utc(2025, 11, 24, 23, 30), 15)]  # 00:30 Tuesday in Berlin, still Monday in UTC
    slot = suggest(utc(2025, 11, 25, 8, 0), night_owl, taken=taken)
    assert (
        slot.starts_at == berlin(2025, 11, 26, 0, 0) and "Ana has 1 session on Tue 25 Nov (daily cap 1)" in slot.reason
    )
    on_monday = suggest(utc(2025, 11, 24, 8, 0), night_owl, taken=taken)
    assert on_monday.starts_at == utc(2025, 11, 24, 8, 30)


def test_the_earliest_facilitator_hosts_and_ties_go_to_the_first_given() -> None:
    ben = Facilitator(name="Ben", timezone="America/New_York", hours="09:00-17:00")  # 14:00 UTC in November
    now = berlin(2025, 11, 25, 17, 0)  # 16:00 UTC: Ana is done for the day, Ben has an hour left
    assert suggest(now, ANA, ben).facilitator == "Ben"
    assert suggest(now, ANA, ben).starts_at == utc(2025, 11, 25, 16, 30)
    assert suggest(now, ANA, ben, duration_minutes=360).facilitator == "Ana"  # Ben's day ends at 22:00 UTC
    twin = ANA.model_copy(update={"name": "Ann"})
    assert suggest(berlin(2025, 11, 25, 10, 0), twin, ANA).facilitator == "Ann"
    assert suggest(berlin(2025, 11, 25, 10, 0), ANA, twin).facilitator == "Ana"


def test_a_busy_first_facilitator_leaves_the_slot_to_the_next() -> None:
    ben = Facilitator(name="Ben", timezone="Europe/Berlin", hours="09:00-17:30")
    taken = [busy("Ana", berlin(2025, 11, 25, 10, 0), 120)]
    slot = suggest(berlin(2025, 11, 25, 9, 45), ANA, ben, taken=taken)
    assert slot == Slot("Ben", berlin(2025, 11, 25, 10, 15), "30 min lead time")


def test_working_hours_follow_the_spring_dst_change() -> None:
    # Europe/Berlin moves to CEST (UTC+2) on Sun 29 Mar 2026: 09:00 is 08:00 UTC on Friday, 07:00 UTC on Monday
    friday = suggest(berlin(2026, 3, 27, 6, 0), ANA)
    assert friday.starts_at == utc(2026, 3, 27, 8, 0)
    monday = suggest(berlin(2026, 3, 27, 17, 0), ANA)
    assert monday.starts_at == utc(2026, 3, 30, 7, 0)
    assert monday.reason.startswith("moved to Mon 30 Mar 09:00 Europe/Berlin")


def test_working_hours_follow_the_autumn_dst_change() -> None:
    # back to CET (UTC+1) on Sun 26 Oct 2025: Friday's 09:00 is 07:00 UTC, Monday's 08:00 UTC
    assert suggest(berlin(2025, 10, 24, 6, 0), ANA).starts_at == utc(2025, 10, 24, 7, 0)
    assert suggest(berlin(2025, 10, 24, 17, 0), ANA).starts_at == utc(2025, 10, 27, 8, 0)


def test_a_dst_day_has_fewer_working_hours() -> None:
    # 01:00-04:00 on Sun 29 Mar 2026 in Berlin is two real hours (02:00-03:00 does not exist): 150 min do not fit
    early = Facilitator(name="Ana", timezone="Europe/Berlin", hours="01:00-04:00")
    now = utc(2026, 3, 28, 23, 0)  # Sun 00:00 CET
    assert suggest(now, early, duration_minutes=120).starts_at == utc(2026, 3, 29, 0, 0)  # 01:00 CET-04:00 CEST
    slot = suggest(now, early, duration_minutes=150)
    assert slot.starts_at == berlin(2026, 3, 30, 1, 0) == utc(2026, 3, 29, 23, 0)


def test_facilitators_without_a_zone_use_the_files_time_zone() -> None:
    local = Facilitator(name="Ana", hours="09:00-17:30")
    now = utc(2025, 11, 25, 6, 0)
    assert suggest_slot(
        now, lead_minutes=30, duration_minutes=60, facilitators=[local], busy=[], default_timezone="Europe/Berlin"
    ).starts_at == utc(2025, 11, 25, 8, 0)
    assert suggest(now, local).starts_at == utc(2025, 11, 25, 9, 0)  # default: UTC


def test_hours_until_midnight_take_a_late_session() -> None:
    late = Facilitator(name="Ana", hours="22:00-24:00")
    assert suggest(utc(2025, 11, 25, 22, 15), late).starts_at == utc(2025, 11, 25, 22, 45)  # ends 23:45
    assert suggest(utc(2025, 11, 25, 22, 31), late).starts_at == utc(2025, 11, 26, 22, 0)  # would end 00:01


def test_without_hours_a_session_may_run_past_midnight_into_another_working_day() -> None:
    weekdays = Facilitator(name="Ana", days="mon-fri")  # type: ignore[arg-type]
    thursday_night = suggest(utc(2025, 11, 27, 23, 0), weekdays)
    assert thursday_night.starts_at == utc(2025, 11, 27, 23, 30)  # into Friday: fine
    friday_night = suggest(utc(2025, 11, 28, 23, 0), weekdays)  # into Saturday: not
    assert friday_night.starts_at == utc(2025, 12, 1, 0, 0)
    assert "would end after Ana's working days (mon-fri)" in friday_night.reason


def test_nothing_within_the_horizon_raises_no_slot() -> None:
    ben = Facilitator(name="Ben", hours="10:00-12:00")
    with pytest.raises(NoSlot, match=r"^no free slot for Ana or Ben in the next 14 days$"):
        suggest(
            berlin(2025, 11, 25, 9, 0),
            ANA,
            ben,
            taken=[busy(n, berlin(2025, 11, 25), 15 * 24 * 60) for n in "Ana Ben".split()],
        )


def test_no_slot_says_when_a_session_is_longer_than_the_working_hours() -> None:
    ben = Facilitator(name="Ben", hours="10:00-12:00")
    with pytest.raises(NoSlot) as caught:
        taken = [busy("Ana", berlin(2025, 11, 25, 9, 0), 2 * 24 * 60)]
        suggest(berlin(2025, 11, 25, 9, 0), ANA, ben, taken=taken, duration_minutes=180, horizon_days=1)
    assert str(caught.value) == (
        "no free slot for Ana or Ben in the next 1 day (a 180 min session is longer than Ben's working hours "
        "(10:00-12:00))"
    )
    assert suggest(berlin(2025, 11, 25, 9, 0), ANA, ben, duration_minutes=180).facilitator == "Ana"


def test_the_horizon_is_counted_from_now() -> None:
    saturday = berlin(2025, 11, 29, 11, 0)
    with pytest.raises(NoSlot):
        suggest(saturday, ANA, horizon_days=1)  # Monday 09:00 is 46 hours away
    assert suggest(saturday, ANA, horizon_days=2).starts_at == berlin(2025, 12, 1, 9, 0)


def test_a_full_calendar_is_jumped_not_stepped() -> None:
    start = berlin(2025, 11, 25, 9, 0)
    taken = [busy("Ana", start + timedelta(minutes=15 * i), 15) for i in range(4000)]  # 1000 hours of sessions
    around_the_clock = Facilitator(name="Ana")
    began = clock.perf_counter()
    slot = suggest(start, around_the_clock, taken=taken, horizon_days=60)
    assert slot.starts_at == start + timedelta(hours=1000)
    with pytest.raises(NoSlot):
        suggest(start, ANA, duration_minutes=600, horizon_days=3650)  # ten years of days, none long enough
    assert clock.perf_counter() - began < 5


def test_zone_less_times_are_taken_as_utc() -> None:
    slot = suggest(datetime(2025, 11, 25, 6, 0), ANA)
    assert slot.starts_at == utc(2025, 11, 25, 8, 0)


# --- slot_problem ----------------------------------------------------------------------------------------------


NOW = berlin(2025, 11, 24, 12, 0)
TAKEN = [busy("Ana", berlin(2025, 11, 25, 14, 0), 60, "Live: X"), busy("Ben", berlin(2025, 11, 25, 10, 0))]


@pytest.mark.parametrize(
    ("starts", "minutes", "problem"),
    [
        (berlin(2025, 11, 25, 10, 0), 60, None),
        (berlin(2025, 11, 25, 16, 30), 60, None),  # ends exactly when her hours do
        (berlin(2025, 11, 25, 15, 0), 60, None),  # right after the busy session
        (berlin(2025, 11, 24, 11, 0), 60, "is in the past"),
        (NOW, 60, "is in the past"),
        (berlin(2025, 11, 25, 18, 30), 60, "starts 18:30 Europe/Berlin, after Ana's working hours (09:00-17:30)"),
        (berlin(2025, 11, 25, 8, 30), 60, "starts 08:30 Europe/Berlin, before Ana's working hours (09:00-17:30)"),
        (berlin(2025, 11, 25, 17, 0), 60, "ends 18:00 Europe/Berlin, after Ana's working hours (09:00-17:30)"),
        (
            berlin(2025, 11, 29, 10, 0),
            60,
            "starts Sat 29 Nov 10:00 Europe/Berlin, not one of Ana's working days (mon-fri)",
        ),
        (berlin(2025, 11, 25, 14, 30), 15, "overlaps Ana's 'Live: X' 14:00-15:00 Europe/Berlin"),
        (berlin(2025, 11, 25, 13, 30), 31, "overlaps Ana's 'Live: X' 14:00-15:00 Europe/Berlin"),
    ],
)
def test_slot_problem_reasons(starts: datetime, minutes: int, problem: str | None) -> None:
    assert slot_problem(starts, minutes, ANA, TAKEN, NOW) == problem


def test_slot_problem_names_the_daily_cap() -> None:
    capped = ANA.model_copy(update={"max_sessions_per_day": 1})
    assert slot_problem(berlin(2025, 11, 25, 10, 0), 60, capped, TAKEN, NOW) == (
        "Ana already has 1 session on Tue 25 Nov (cap 1)"
    )
    assert slot_problem(berlin(2025, 11, 26, 10, 0), 60, capped, TAKEN, NOW) is None


def test_slot_problem_without_a_facilitator_only_checks_the_past() -> None:
    assert slot_problem(berlin(2025, 11, 29, 3, 0), 600, None, TAKEN, NOW) is None
    assert slot_problem(NOW - timedelta(minutes=1), 60, None, TAKEN, NOW) == "is in the past"


def test_slot_problem_dates_a_clash_on_another_day() -> None:
    anytime = Facilitator(name="Ana", timezone="Europe/Berlin")
    taken = [busy("Ana", berlin(2025, 11, 25, 23, 30), 120, "Live: Night")]
    assert slot_problem(berlin(2025, 11, 26, 0, 30), 30, anytime, taken, NOW) == (
        "overlaps Ana's 'Live: Night' Tue 25 Nov 23:30-01:30 Europe/Berlin"
    )


def test_slot_problem_uses_the_default_time_zone() -> None:
    local = Facilitator(name="Ana", hours="09:00-17:30")
    starts = utc(2025, 11, 25, 16, 45)  # 17:45 in Berlin
    assert slot_problem(starts, 30, local, [], NOW) is None
    assert slot_problem(starts, 30, local, [], NOW, default_timezone="Europe/Berlin") == (
        "starts 17:45 Europe/Berlin, after Ana's working hours (09:00-17:30)"
    )


# --- properties ------------------------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "Pacific/Chatham"]
NAMES = ["Ana", "Ben", "Cy"]


@st.composite
def facilitators(draw: st.DrawFn, name: str) -> Facilitator:
    hours = None
    if draw(st.booleans()):
        # from 04:00: DST changes happen earlier in the night, where a clock time may not exist or exist twice
        start = draw(st.integers(16, 94))
        end = draw(st.integers(start + 1, 96))
        hours = f"{start // 4:02d}:{start % 4 * 15:02d}-{end // 4:02d}:{end % 4 * 15:02d}"
    return Facilitator(
        name=name,
        timezone=draw(st.sampled_from(ZONES) | st.none()),
        hours=hours,  # type: ignore[arg-type]
        days=draw(st.sets(st.sampled_from(WEEKDAYS), min_size=1).map(sorted)),  # type: ignore[arg-type]
        max_sessions_per_day=draw(st.none() | st.integers(1, 3)),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, object]:
    now = draw(st.datetimes(datetime(2025, 1, 1), datetime(2026, 12, 31), timezones=st.just(UTC)))
    count = draw(st.integers(0, 3))
    hosts = [draw(facilitators(name)) for name in NAMES[:count]]
    taken = draw(
        st.lists(
            st.builds(
                lambda who, offset, minutes, n: busy(who, now + timedelta(minutes=offset), minutes, f"Live: {n}"),
                st.sampled_from(NAMES),
                st.integers(-180, 6 * 24 * 60),
                st.integers(1, 240),
                st.integers(0, 99),
            ),
            max_size=12,
        )
    )
    return {
        "now": now,
        "facilitators": hosts,
        "busy": taken,
        "lead_minutes": draw(st.integers(1, 240)),  # 0 may start at `now`, which slot_problem calls the past
        "duration_minutes": draw(st.integers(15, 240)),
        "horizon_days": draw(st.integers(1, 8)),
        "default_timezone": draw(st.sampled_from(ZONES)),
    }


def candidates(case: dict[str, object], host: Facilitator, earliest: datetime, until: datetime) -> list[datetime]:
    """Every start the earliest fitting one can be: the lead time, a working day's start, the end of a session."""
    zone = host.zone(case["default_timezone"])  # type: ignore[arg-type]
    opens = host.hours.start if host.hours else time(0)
    first = earliest.astimezone(zone).date() - timedelta(days=1)
    days = (until.astimezone(zone).date() - first).days + 2
    starts = [datetime.combine(first + timedelta(days=i), opens, tzinfo=zone).astimezone(UTC) for i in range(days)]
    starts += [first_slot(b.ends_at, 0) for b in case["busy"] if b.facilitator == host.name]  # type: ignore[attr-defined]
    return sorted({s for s in [earliest, *starts] if earliest <= s < until})


def assert_fits(case: dict[str, object], host: Facilitator, slot: Slot) -> None:
    """Checked here without the module's calendar: hours, days, cap and busy time, in the host's time zone."""
    zone = host.zone(case["default_timezone"])  # type: ignore[arg-type]
    starts, ends = slot.starts_at, slot.starts_at + timedelta(minutes=case["duration_minutes"])  # type: ignore[arg-type]
    local_start, local_last = starts.astimezone(zone), (ends - timedelta(microseconds=1)).astimezone(zone)
    if host.hours is not None and not host.hours.whole_day:
        assert local_start.date() == local_last.date() and WEEKDAYS[local_start.weekday()] in host.days
        assert host.hours.start <= local_start.time()
        assert host.hours.end == time(0) or local_last.time() < host.hours.end
    else:
        day = local_start.date()
        while day <= local_last.date():
            assert WEEKDAYS[day.weekday()] in host.days
            day += timedelta(days=1)
    mine = [b for b in case["busy"] if b.facilitator == host.name]  # type: ignore[attr-defined]
    assert not [b for b in mine if b.starts_at < ends and b.ends_at > starts]
    if host.max_sessions_per_day is not None:
        same_day = [b for b in mine if b.starts_at.astimezone(zone).date() == local_start.date()]
        assert len(same_day) < host.max_sessions_per_day


@given(scenarios())
def test_the_suggested_slot_fits_and_nothing_earlier_does(case: dict[str, object]) -> None:
    now: datetime = case["now"]  # type: ignore[assignment]
    hosts: list[Facilitator] = case["facilitators"]  # type: ignore[assignment]
    earliest = first_slot(now, case["lead_minutes"])  # type: ignore[arg-type]
    limit = now + timedelta(days=case["horizon_days"])  # type: ignore[arg-type]
    try:
        slot = suggest_slot(**case)  # type: ignore[arg-type]
    except NoSlot as error:
        assert hosts and str(error).startswith("no free slot for ")
        slot = None
    if slot is not None:
        assert slot.starts_at >= now + timedelta(minutes=case["lead_minutes"])  # type: ignore[arg-type]
        assert slot.starts_at.tzinfo is UTC and slot.starts_at.second == slot.starts_at.microsecond == 0
        assert slot.starts_at <= limit and slot.reason
        if not hosts:
            assert slot.facilitator is None and slot.starts_at == earliest
            return
        host = next(h for h in hosts if h.name == slot.facilitator)
        assert_fits(case, host, slot)
        assert (
            slot_problem(
                slot.starts_at,
                case["duration_minutes"],
                host,
                case["busy"],
                now,
                default_timezone=case["default_timezone"],
            )
            is None
        )  # type: ignore[arg-type]
    # the earliest: no host can take any earlier start (within the horizon when there was none)
    for rank, host in enumerate(hosts):
        until = limit + timedelta(microseconds=1) if slot is None else slot.starts_at
        if slot is not None and rank < [h.name for h in hosts].index(slot.facilitator):  # type: ignore[arg-type]
            until += timedelta(microseconds=1)  # an earlier host would have won a tie
        for start in candidates(case, host, earliest, until):
            problem = slot_problem(
                start, case["duration_minutes"], host, case["busy"], now, default_timezone=case["default_timezone"]
            )  # type: ignore[arg-type]
            assert problem is not None, (host.name, start)
