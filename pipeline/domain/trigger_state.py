"""What the trigger stage remembers, in NATS KV so every worker and every restart sees the same:

- per link (canonical URL), the current *episode*: the trusted shares within the merge window and the trigger
  it fired, if any; a later share of the same link joins it ("also shared by") instead of a second session;
- one `budget` document: recent firings, from which cooldowns and daily caps are computed.

Every write is a compare-and-set on the KV revision; on a conflict the caller re-reads and decides again, so
two workers handling two shares of one link still create one trigger. Trigger ids are derived from the link and
episode, so a share redelivered after a crash finds its own trigger (or its own budget reservation) and
re-publishes it instead of creating another.

When the enrich stage gives up on an episode's page it marks the episode `unread` (`mark_unread`). Such an episode
can be re-opened (`reopened`): as the next episode, with a new trigger id (so a new Nats-Msg-Id that JetStream's
duplicate window does not drop, and a new proposal id), by a new share of the link when the failure was transient
(a slow or failing server, not a refusal) and the rule did not already propose from the post, or by an operator's
`impromptu pages retry URL` whatever the failure. The mark names the trigger it is for, so a redelivered failure of
an episode that was re-opened since changes nothing.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import TypeVar

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field

from pipeline.domain.rules import Rules
from pipeline.domain.scoring import Budget
from pipeline.errors import RetryableError
from pipeline.messages import Share, TriggerFired

MAX_SHARES_KEPT = 50  # beyond this a viral link only counts; 50 sharers already make the crowd term 0.98
BUDGET_KEY = "budget"
CAS_ATTEMPTS = 20
M = TypeVar("M", bound=BaseModel)


class UnreadPage(BaseModel):
    """The enrich stage gave up on the page of the episode's trigger."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trigger_id: str
    reason: str  # the fetch's reason code: timeout, http_5xx, http_404, blocked_address, ...
    detail: str = ""
    retryable: bool = Field(description="Transient (the server was slow or failing): a new share re-opens it.")
    at: datetime


class Reopening(BaseModel):
    """Why this episode exists although the link's merge window was still open: the last one's page was not read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failed_trigger_id: str
    reason: str
    by: str = Field(description="Who re-opened it: an operator's name, or `share <id>`.")
    at: datetime


class LinkEpisode(BaseModel):
    model_config = ConfigDict(extra="forbid")

    canonical_url: str
    episode: int = 1
    started_at: datetime
    shares: list[Share] = Field(default_factory=list)
    more_shares: int = Field(default=0, description="Shares seen beyond MAX_SHARES_KEPT.")
    trigger: TriggerFired | None = None
    unread: UnreadPage | None = Field(default=None, description="Set when the trigger's page could not be read.")
    reopened: Reopening | None = None

    def has(self, share: Share) -> bool:
        return any(s.id == share.id for s in self.shares)

    def trigger_id(self, key: str) -> str:
        return f"fired:{key}.{self.episode}"

    @property
    def ended_unread(self) -> bool:
        return self.trigger is not None and self.unread is not None and self.unread.trigger_id == self.trigger.id

    def reopened_by_share(self, share: Share) -> bool:
        """A new share re-opens an episode whose page failed only for a while; never a redelivered share, a page
        that was refused (it stays refused), or a rule that proposed from the post already."""
        return (
            self.ended_unread
            and self.unread is not None
            and self.unread.retryable
            and self.trigger is not None
            and not self.trigger.plan.without_article
            and not self.has(share)
        )


def superseded(episode: LinkEpisode | None, key: str, trigger_id: str) -> bool:
    """Trigger `trigger_id` of link `key` belongs to an episode that was re-opened since (a stale redelivery): its
    page is read under the newer trigger; reading it for this one too would make a second proposal."""
    number = trigger_id.removeprefix(f"fired:{key}.")
    if episode is None or episode.reopened is None or number == trigger_id or not number.isdigit():
        return False
    failed = episode.reopened.failed_trigger_id.removeprefix(f"fired:{key}.")
    return failed.isdigit() and int(number) <= int(failed) < episode.episode


def reopened(episode: LinkEpisode, now: datetime, by: str) -> LinkEpisode:
    """The next episode of a link whose page was not read: a new merge window and trigger id, the shares kept."""
    assert episode.trigger is not None and episode.unread is not None
    why = Reopening(failed_trigger_id=episode.trigger.id, reason=episode.unread.reason, by=by, at=now)
    return episode.model_copy(
        update={"episode": episode.episode + 1, "started_at": now, "trigger": None, "unread": None, "reopened": why}
    )


def next_episode(current: LinkEpisode | None, canonical: str, now: datetime, window: timedelta) -> LinkEpisode:
    """The episode a share arriving `now` belongs to: the current one while its window is open, else a new one."""
    if current is not None and now - current.started_at <= window:
        return current
    number = current.episode + 1 if current is not None else 1
    return LinkEpisode(canonical_url=canonical, episode=number, started_at=now)


def with_share(episode: LinkEpisode, share: Share) -> LinkEpisode:
    if episode.has(share):
        return episode
    if len(episode.shares) >= MAX_SHARES_KEPT:
        return episode.model_copy(update={"more_shares": episode.more_shares + 1})
    return episode.model_copy(update={"shares": [*episode.shares, share]})


class Firing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: str
    topics: list[str]
    at: datetime
    day: str = Field(description="Local date in the rules' time zone, for daily caps.")


class BudgetRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    firings: dict[str, Firing] = Field(default_factory=dict, description="Trigger id -> firing.")

    def snapshot(self, rules: Rules, now: datetime, *, excluding: Collection[str]) -> Budget:
        """The budget as seen by the triggers `excluding`: its own reservation (a crash before it was published)
        must not block it on redelivery, nor that of the trigger it re-opens (its page was never read)."""
        today = local_day(rules, now)
        rule_last: dict[str, datetime] = {}
        topic_last: dict[str, datetime] = {}
        today_by_rule: dict[str, int] = {}
        for trigger_id, firing in self.firings.items():
            if trigger_id in excluding:
                continue
            rule_last[firing.rule] = max(firing.at, rule_last.get(firing.rule, firing.at))
            for topic in firing.topics:
                topic_last[topic] = max(firing.at, topic_last.get(topic, firing.at))
            if firing.day == today:
                today_by_rule[firing.rule] = today_by_rule.get(firing.rule, 0) + 1
        return Budget(rule_last, topic_last, sum(today_by_rule.values()), today_by_rule)

    def reserve(self, trigger_id: str, firing: Firing, keep: timedelta) -> BudgetRecord:
        recent = {k: f for k, f in self.firings.items() if firing.at - f.at <= keep}
        return BudgetRecord(firings={**recent, trigger_id: firing})


def local_day(rules: Rules, now: datetime) -> str:
    return now.astimezone(rules.zone).date().isoformat()


def budget_memory(rules: Rules) -> timedelta:
    """How long a firing matters: the longest cooldown, and at least two days for daily caps across zones."""
    longest = max([rules.topic_cooldown_minutes, *(r.cooldown_minutes for r in rules.rules)], default=0)
    return max(timedelta(minutes=longest), timedelta(days=2))


class TriggerState:
    """Typed, revisioned access to the triggers bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def episode(self, key: str) -> tuple[LinkEpisode | None, int | None]:
        return await self._load(key, LinkEpisode)

    async def budget(self) -> tuple[BudgetRecord, int | None]:
        record, revision = await self._load(BUDGET_KEY, BudgetRecord)
        return record or BudgetRecord(), revision

    async def write(self, key: str, value: BaseModel, revision: int | None) -> bool:
        """Compare-and-set: False when someone else wrote `key` since `revision` was read."""
        data = value.model_dump_json().encode()
        try:
            if revision is None:
                await self.kv.create(key, data)
            else:
                await self.kv.update(key, data, last=revision)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def mark_unread(self, key: str, unread: UnreadPage) -> bool:
        """Record that the page of trigger `unread.trigger_id` was not read; False (and nothing written) when the
        link's episode has moved on since (re-opened, or a new merge window). Idempotent: marking twice is once."""
        for _ in range(CAS_ATTEMPTS):
            episode, revision = await self.episode(key)
            if episode is None or episode.trigger is None or episode.trigger.id != unread.trigger_id:
                return False
            if episode.unread is not None and episode.unread.trigger_id == unread.trigger_id:
                return True
            if await self.write(key, episode.model_copy(update={"unread": unread}), revision):
                return True
        raise RetryableError(f"{key} changed {CAS_ATTEMPTS} times while marking its page unread; will retry")

    async def _load(self, key: str, model: type[M]) -> tuple[M | None, int | None]:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None, None
        return model.model_validate_json(entry.value or b""), entry.revision
