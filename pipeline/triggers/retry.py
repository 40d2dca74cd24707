"""`impromptu pages retry URL`: an operator tries again a shared page the enrich stage gave up on.

Without it a brief slowdown of an article's server is permanent: the share ends as `content.failed`, nothing is left
to replay, and within the merge window the link has its trigger already. A retry re-opens the link's episode as the
next one (pipeline/domain/trigger_state.py `reopened`) and fires its trigger again under the new episode's id
(`fired:<link>.<n+1>`, a Nats-Msg-Id JetStream has not seen), after removing a refusal the enrich stage cached in
impromptu-pages, so the page is fetched again. The rule is not judged again: it fired already.

Once only: the re-opening is a compare-and-set on the episode, so of two retries at once one re-opens and the other
is told so; a retry run again after it was interrupted between the write and the publish re-publishes the same
trigger (the same id: stored once).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from faststream.nats import NatsBroker
from nats.js.errors import KeyNotFoundError

from pipeline import bus, stores
from pipeline.domain.article_cache import cached
from pipeline.domain.canonical import canonical_url, link_key
from pipeline.domain.trigger_state import CAS_ATTEMPTS, LinkEpisode, TriggerState, reopened
from pipeline.errors import ImpromptuError, RetryableError
from pipeline.messages import TriggerFired, utc_now


class RetryRefused(ImpromptuError):
    """Nothing to retry for this link; the message says why."""


@dataclass(frozen=True)
class PageRetry:
    trigger: TriggerFired
    failed_trigger_id: str
    reason: str  # why the page was not read
    again: bool = False  # this retry had been done already (by `by`, at `at`): its trigger re-published
    by: str = ""
    at: datetime | None = None


def _retried(episode: LinkEpisode) -> bool:
    """An episode an operator re-opened (not a share), whose trigger is not known to have failed."""
    return (
        episode.reopened is not None
        and not episode.reopened.by.startswith("share ")
        and episode.trigger is not None
        and not episode.ended_unread
    )


async def retry_page(broker: NatsBroker, url: str, *, by: str) -> PageRetry:
    """Re-open the link's episode whose page was not read and publish its trigger again; RetryRefused when the link
    never fired, its page was read (or is being read), or a new share already re-opened it."""
    canonical = canonical_url(url)
    key = link_key(canonical)
    state = TriggerState(await stores.bucket(broker, stores.TRIGGERS))
    for _ in range(CAS_ATTEMPTS):
        stored, revision = await state.episode(key)
        if stored is None or (stored.trigger is None and stored.reopened is None):
            raise RetryRefused(f"{canonical} never fired a trigger: nothing to retry (`impromptu trace {url}`)")
        if _retried(stored):
            assert stored.trigger is not None and stored.reopened is not None
            await bus.publish(broker, bus.TRIGGERS_FIRED, stored.trigger)
            why = stored.reopened
            return PageRetry(stored.trigger, why.failed_trigger_id, why.reason, again=True, by=why.by, at=why.at)
        if not stored.ended_unread:
            state_now = "was re-opened by a new share" if stored.reopened else "was read or is being read"
            fired = stored.trigger.id if stored.trigger else "no trigger yet"
            raise RetryRefused(f"the page of {canonical} ({fired}) {state_now}: nothing to retry")
        assert stored.trigger is not None and stored.unread is not None
        await forget_refusal(broker, key)
        episode = reopened(stored, utc_now(), by=by)
        retried = f"retried by {by}: the page of {stored.trigger.id} was not read ({stored.unread.reason})"
        reasons = [*stored.trigger.reasons, retried]
        trigger = stored.trigger.model_copy(
            update={"id": episode.trigger_id(key), "created_at": utc_now(), "reasons": reasons}
        )
        if await state.write(key, episode.model_copy(update={"trigger": trigger}), revision):
            await bus.publish(broker, bus.TRIGGERS_FIRED, trigger)
            return PageRetry(trigger, stored.trigger.id, stored.unread.reason)
    raise RetryableError(f"{canonical} changed {CAS_ATTEMPTS} times while retrying it; try again")


async def forget_refusal(broker: NatsBroker, key: str) -> None:
    """A refusal the enrich stage cached (http_404, not_html, ...) would answer the retry without a fetch."""
    kv = await stores.bucket(broker, stores.PAGES)
    record = await cached(kv, key)
    if record is not None and record.refused is not None:
        try:
            await kv.delete(key)
        except KeyNotFoundError:
            pass
