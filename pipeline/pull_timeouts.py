"""An idle pull consumer must not leak: every empty fetch ends as `nats.errors.TimeoutError`.

nats-py's `PullSubscription.fetch()` raises a plain `asyncio.TimeoutError` on some of its paths when no message
came within the timeout (`_fetch_n`: the deadline passed before the lingering request), and
`nats.errors.TimeoutError` on others. FastStream's pull loop suppresses only the latter, so the former kills the
loop's task; FastStream's supervisor starts a new one and keeps the dead task, with its exception, traceback and
frames, in the subscriber's task list for good. With a 1 s fetch timeout on 14 consumers that was about 90 dead
tasks a minute on an idle worker, and memory that grew with time alone.

`install()` makes every empty fetch raise `nats.errors.TimeoutError`, which is an `asyncio.TimeoutError` too, so
any caller catching either still does.
"""

from __future__ import annotations

from typing import Any

import nats.errors
from nats.js.client import JetStreamContext

_PullSubscription = JetStreamContext.PullSubscription
_fetch = _PullSubscription.fetch


async def _fetch_timing_out_as_nats(self: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await _fetch(self, *args, **kwargs)
    except nats.errors.TimeoutError:
        raise
    except TimeoutError:  # asyncio.TimeoutError is TimeoutError (3.11+)
        raise nats.errors.TimeoutError from None


def install() -> None:
    """Idempotent: the first broker built installs it, later ones find it there."""
    _PullSubscription.fetch = _fetch_timing_out_as_nats  # type: ignore[method-assign]


def installed() -> bool:
    return _PullSubscription.fetch is _fetch_timing_out_as_nats
