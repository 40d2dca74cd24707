"""The edit form's start, typed as wall-clock time in the host's zone, read back as UTC (DST included)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from pipeline.web.approval.pages import local_time

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("2026-01-15T09:30", datetime(2026, 1, 15, 8, 30, tzinfo=UTC)),  # winter: UTC+1
        ("2026-07-15T09:30", datetime(2026, 7, 15, 7, 30, tzinfo=UTC)),  # summer: UTC+2
        (" 2026-03-29T03:00 ", datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),  # just after the jump forward
        ("2026-10-25T02:30", datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),  # passed twice: the first (summer) one
    ],
)
def test_wall_clock_time_in_berlin_is_stored_as_utc(typed: str, expected: datetime) -> None:
    assert local_time(typed, BERLIN) == expected


def test_a_time_the_clocks_skip_is_refused() -> None:
    with pytest.raises(ValueError, match="does not exist in Europe/Berlin: the clocks skip it"):
        local_time("2026-03-29T02:30", BERLIN)


def test_what_is_not_a_time_says_which_zone_is_expected() -> None:
    with pytest.raises(ValueError, match=r"is not a date and 24-hour time: YYYY-MM-DD HH:MM, Europe/Berlin time"):
        local_time("tomorrow at ten", BERLIN)
    assert local_time("2026-07-15T09:30", ZoneInfo("UTC")) == datetime(2026, 7, 15, 9, 30, tzinfo=UTC)
