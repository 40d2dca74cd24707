"""Delivery semantics without a bus: backoff, error descriptions, permanent vs retryable."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from pipeline.delivery import DeliveryPolicy, describe_error, is_permanent
from pipeline.errors import PermanentError, RetryableError
from pipeline.messages import Share
from pipeline.net.fetch import FetchFailed, FetchRefused


def share_validation_error() -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Share.model_validate({"bad": 1})
    return caught.value


def test_retry_delay_doubles_from_the_base() -> None:
    policy = DeliveryPolicy(backoff_base_seconds=1.0, backoff_max_seconds=60.0)
    assert [policy.retry_delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]


def test_retry_delay_caps() -> None:
    policy = DeliveryPolicy(backoff_base_seconds=1.0, backoff_max_seconds=60.0)
    assert policy.retry_delay(7) == 60.0
    assert policy.retry_delay(1000) == 60.0  # no overflow far past the cap
    assert policy.retry_delay(5000) == 60.0  # nor for a message that waited a day (NotYet)


def test_retry_delay_first_delivery_and_zero() -> None:
    policy = DeliveryPolicy(backoff_base_seconds=0.5, backoff_max_seconds=10.0)
    assert policy.retry_delay(0) == 0.5
    assert policy.retry_delay(1) == 0.5
    assert policy.retry_delay(2) == 1.0


def test_describe_validation_error_names_missing_fields() -> None:
    description = describe_error(share_validation_error())
    assert description.startswith("invalid Share message: ")
    for field in ("id", "correlation_id", "source", "sharer", "url"):
        assert f"{field}: Field required" in description
    assert "bad: Extra inputs are not permitted" in description


def test_describe_plain_errors() -> None:
    assert describe_error(RuntimeError("boom")) == "boom"
    assert describe_error(RuntimeError()) == "RuntimeError"
    assert describe_error(FetchRefused("http_404", "gone")) == "http_404: gone"


@pytest.mark.parametrize(
    "error",
    [
        share_validation_error(),
        PermanentError("no"),
        FetchRefused("blocked_address", "x"),
        json.JSONDecodeError("bad", "{", 0),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_permanent_errors(error: BaseException) -> None:
    assert is_permanent(error)


@pytest.mark.parametrize(
    "error",
    [RetryableError("later"), FetchFailed("http_503", "x"), RuntimeError("?"), TimeoutError()],
    ids=lambda error: type(error).__name__,
)
def test_retryable_errors(error: BaseException) -> None:
    assert not is_permanent(error)
