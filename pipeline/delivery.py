"""Delivery semantics shared by every stage: retry transient failures with backoff, dead-letter the rest.

FastStream's NATS default (REJECT_ON_ERROR) terminates a failing message, which would lose it. Instead:
- a RetryableError (or any unexpected error) is nak'ed with an exponential delay, until `max_deliveries`;
- a NotYet (what the message waits for has not happened) is nak'ed with a delay, never dead-lettered: the
  handler bounds the wait itself;
- a PermanentError or a message that does not validate goes straight to `impromptu.dlq.<stage>`;
- once retries run out the message goes there too, with the last reason;
- if the dead letter itself cannot be published, the message is nak'ed, never dropped.
Every log line inside a stage carries the message's correlation id.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, cast

import structlog
from faststream import BaseMiddleware
from faststream.exceptions import HandlerException, NackMessage, RejectMessage
from nats.aio.msg import Msg
from pydantic import ValidationError

from pipeline.errors import NotYet, PermanentError
from pipeline.messages import DeadLetter
from pipeline.settings import DeliveryPolicy  # defined with the settings, which need no faststream

log = structlog.get_logger("pipeline.delivery")

PublishDeadLetter = Callable[[DeadLetter], Awaitable[object]]


def body_problem(body: bytes) -> str | None:
    """Why a message body is not JSON at all, or None when it is. FastStream hands a body it cannot decode to pydantic
    as bytes, which then says only "Input should be a valid dictionary or instance of Share"."""
    try:
        json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as error:
        return f"body is not UTF-8: {error.reason} (byte 0x{body[error.start]:02x} at position {error.start})"
    except json.JSONDecodeError as error:
        return f"body is not JSON: {error.msg} at line {error.lineno} column {error.colno}"
    return None


def describe_error(error: BaseException, body: bytes | None = None) -> str:
    """The reason a dead letter or a retry gives; with the message's `body`, a body that is not JSON says so."""
    if isinstance(error, ValidationError) and body is not None and (problem := body_problem(body)):
        return problem
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc']) or '<body>'}: {issue['msg']}"
            for issue in error.errors(include_url=False)
        )
        return f"invalid {error.title} message: {problems}"
    return str(error) or type(error).__name__


def is_permanent(error: BaseException) -> bool:
    return isinstance(error, (PermanentError, ValidationError, json.JSONDecodeError, UnicodeDecodeError))


def _header(msg: Msg, name: str) -> str | None:
    return (msg.headers or {}).get(name)


class StageMiddleware(BaseMiddleware):
    """Built once per message by `stage_middleware(...)`."""

    def __init__(
        self,
        msg: Any,
        /,
        *,
        context: Any,
        stage: str,
        policy: DeliveryPolicy,
        publish_dead_letter: PublishDeadLetter,
    ) -> None:
        super().__init__(msg, context=context)
        self.stage = stage
        self.policy = policy
        self.publish_dead_letter = publish_dead_letter

    def _raw(self) -> Msg:
        # FastStream types a middleware's message as Any | None; one built for a received NATS message has it.
        return cast(Msg, self.msg)

    async def on_receive(self) -> None:
        raw = self._raw()
        structlog.contextvars.bind_contextvars(
            stage=self.stage, correlation_id=_header(raw, "correlation_id"), subject=raw.subject
        )

    async def after_processed(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool | None:
        try:
            # Cancellation and a handler's own ack/nack/reject decision pass through untouched.
            if isinstance(exc_val, Exception) and not isinstance(exc_val, HandlerException):
                await self._settle_failure(exc_val)  # always raises NackMessage or RejectMessage
        finally:
            structlog.contextvars.unbind_contextvars("stage", "correlation_id", "subject")
        return False

    async def _settle_failure(self, error: Exception) -> None:
        raw = self._raw()
        delivered = raw.metadata.num_delivered if raw.metadata else 1
        reason = describe_error(error, raw.data)
        if isinstance(error, NotYet):  # waiting is not failing: no retry budget spent, no dead letter
            delay = error.retry_after if error.retry_after is not None else self.policy.retry_delay(delivered)
            log.info("stage.waiting", reason=reason, delivered=delivered, retry_in_seconds=delay)
            raise NackMessage(delay=delay) from error
        permanent = is_permanent(error)
        if not permanent and delivered < self.policy.max_deliveries:
            # a provider's rate limit says how long to wait (RateLimited.retry_after); else exponential backoff
            asked = getattr(error, "retry_after", None)
            delay = float(asked) if isinstance(asked, int | float) else self.policy.retry_delay(delivered)
            log.warning("stage.retry", reason=reason, delivered=delivered, retry_in_seconds=delay)
            raise NackMessage(delay=delay) from error
        dead_letter = DeadLetter(
            stage=self.stage,
            subject=raw.subject,
            data=raw.data.decode("utf-8", errors="backslashreplace"),
            headers=dict(raw.headers or {}),
            reason=reason,
            error_type=type(error).__name__,
            permanent=permanent,
            deliveries=delivered,
            stream_sequence=raw.metadata.sequence.stream if raw.metadata else None,
            correlation_id=_header(raw, "correlation_id"),
        )
        try:
            await self.publish_dead_letter(dead_letter)
        except Exception as publish_error:  # the bus is unwell: keep the message, try again later
            log.error("stage.dead_letter_failed", reason=reason, error=describe_error(publish_error))
            raise NackMessage(delay=self.policy.retry_delay(delivered)) from error
        log.error("stage.dead_letter", reason=reason, delivered=delivered, permanent=permanent)
        raise RejectMessage() from error


def stage_middleware(
    stage: str, policy: DeliveryPolicy, publish_dead_letter: PublishDeadLetter
) -> Callable[..., StageMiddleware]:
    def build(msg: Any, /, *, context: Any) -> StageMiddleware:
        return StageMiddleware(
            msg, context=context, stage=stage, policy=policy, publish_dead_letter=publish_dead_letter
        )

    return build
