"""The one Retry-After parser (pipeline/http_retry.py): RFC 9110's delay-seconds or HTTP-date, nothing else, and
every former copy (notices, providers, channels, trigger sources) now giving the same answer for the same header."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import requests
import tweepy

from pipeline import http_retry
from pipeline.channels import x as x_channel
from pipeline.channels.base import Post, RateLimited
from pipeline.channels.slack import SlackChannel
from pipeline.domain.notify import SlackRateLimited, send_slack
from pipeline.messages import ScheduledSession, as_utc
from pipeline.providers.http import retry_after
from pipeline.triggers.sources import http as source_http
from pipeline.triggers.sources import x as x_source
from tests.channel_fakes import FakeSlack, make_post, running

NOW = datetime(2025, 3, 4, 12, 0, tzinfo=UTC)
UNUSABLE = ["nan", "inf", "-inf", "NaN", "-1", "1.5", "+5", "1e3", "0x10", "soon", "Tue, 99 Foo 2025", " ", ""]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("Tue, 04 Mar 2025 12:02:30 GMT", 150.0),  # IMF-fixdate in the future
        ("Tue, 04 Mar 2025 11:00:00 GMT", 0.0),  # in the past: now
        ("Tuesday, 04-Mar-25 12:01:00 GMT", 60.0),  # obsolete RFC 850 form
        ("Tue Mar  4 12:00:10 2025", 10.0),  # obsolete asctime form
        (None, None),
        *[(value, None) for value in UNUSABLE],
        ("9" * 400, None),  # too large to be a number of seconds
        ("2025-03-05T00:00:00Z", None),  # ISO 8601 is not an HTTP-date (iso_moment reads it)
    ],
)
def test_retry_after_follows_rfc_9110(value: str | None, seconds: float | None) -> None:
    assert http_retry.retry_after_seconds(value, NOW) == seconds


def test_retry_after_moment_and_cap() -> None:
    assert http_retry.retry_after_moment("90", NOW) == NOW + timedelta(seconds=90)
    assert http_retry.retry_after_moment("Tue, 04 Mar 2025 11:00:00 GMT", NOW) == NOW - timedelta(hours=1)
    assert http_retry.retry_after_moment("nan", NOW) is None
    assert http_retry.retry_after_seconds("7200", NOW, cap=600) == 600
    assert http_retry.retry_after_seconds("60", NOW, cap=600) == 60
    assert http_retry.retry_after_seconds("nan", NOW, cap=600) is None  # a cap is not a default


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (str(int(NOW.timestamp()) + 300), 300.0),  # X: Unix epoch seconds
        (str(int(NOW.timestamp()) - 300), 0.0),
        ("45", 45.0),  # a small number: seconds from now
        ("2025-03-04T12:05:00.000Z", 300.0),  # Mastodon: ISO 8601
        ("2025-03-04T12:05:00", 300.0),  # zone-less: UTC
        ("nan", None),
        ("inf", None),
        ("-1", None),
        ("soon", None),
        (None, None),
    ],
)
def test_reset_headers(value: str | None, seconds: float | None) -> None:
    assert http_retry.reset_seconds(value, NOW) == seconds


# --- each former copy now answers through it --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1.5"])
def test_provider_retry_after_has_no_value_for_unusable_headers(value: str) -> None:
    assert retry_after(httpx.Response(429, headers={"Retry-After": value}), NOW) == (None, None)


def test_provider_retry_after_reads_seconds_dates_and_zooms_iso_time() -> None:
    def said(value: str) -> tuple[float | None, datetime | None]:
        return retry_after(httpx.Response(429, headers={"Retry-After": value}), NOW)

    assert said("30") == (30.0, NOW + timedelta(seconds=30))
    assert said("Tue, 04 Mar 2025 12:02:30 GMT") == (150.0, NOW + timedelta(seconds=150))
    assert said("2025-03-05T00:00:00Z") == (43200.0, datetime(2025, 3, 5, tzinfo=UTC))


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1.5", "soon"])
def test_source_retry_after_falls_back_to_its_default(value: str) -> None:
    assert source_http.retry_after_seconds({"retry-after": value}, NOW) == source_http.DEFAULT_RETRY_AFTER
    reset = {"retry-after": value, "x-ratelimit-reset": "2025-03-04T12:05:00Z"}
    assert source_http.retry_after_seconds(reset, NOW) == 300


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_x_resets_fall_back_to_their_defaults(value: str) -> None:
    headers = requests.structures.CaseInsensitiveDict({"x-rate-limit-reset": value})
    assert x_channel.rate_limit_wait(headers) == x_channel.DEFAULT_WAIT

    response = requests.Response()
    response.status_code = 429
    response.headers = headers
    assert x_source._retry_after(tweepy.TooManyRequests(response), NOW.timestamp()) == x_source.DEFAULT_RATE_LIMIT_WAIT
    response.headers = requests.structures.CaseInsensitiveDict({"x-rate-limit-reset": str(NOW.timestamp() + 60)})
    assert x_source._retry_after(tweepy.TooManyRequests(response), NOW.timestamp()) == 60


@pytest.fixture
def fake_slack() -> Iterator[tuple[FakeSlack, str]]:
    for fake, base in running(FakeSlack()):
        yield fake, fake.webhook(base)


@pytest.mark.parametrize(("value", "expected"), [("nan", None), ("inf", None), ("-1", None), ("1.5", None), ("9", 9)])
async def test_slack_notice_and_slack_channel_agree(
    fake_slack: tuple[FakeSlack, str], build_session: Callable[..., ScheduledSession], value: str, expected: float
) -> None:
    fake, webhook = fake_slack
    fake.fail(429, "rate_limited", {"Retry-After": value}, times=2)
    post: Post = make_post(build_session(), "slack", json.dumps({"text": "hi"}))

    with pytest.raises(RateLimited) as channel:
        await SlackChannel(webhook, timeout=2).post(post)
    with pytest.raises(SlackRateLimited) as notice:
        await send_slack(webhook, {"text": "hi"})

    assert channel.value.retry_after == notice.value.retry_after == expected


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1060", 60.0),
        ("0", 0.0),
        ("999.5", 0.0),
        ("1000.5", 0.5),
        ("nan", None),
        ("inf", None),
        ("-1", None),
        (None, None),
    ],
)
def test_epoch_seconds(value: str | None, seconds: float | None) -> None:
    assert http_retry.epoch_seconds(value, 1000.0) == seconds


def test_as_utc_takes_a_zone_less_time_as_utc() -> None:
    from zoneinfo import ZoneInfo

    assert as_utc(datetime(2025, 3, 4, 12, 0)) == NOW and as_utc(datetime(2025, 3, 4, 12, 0)).tzinfo is UTC
    assert as_utc(datetime(2025, 3, 4, 13, 0, tzinfo=ZoneInfo("Europe/Paris"))).hour == 12
