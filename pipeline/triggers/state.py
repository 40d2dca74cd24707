"""What the trigger stage remembers, in NATS KV so every worker and every restart sees the same:

- per link (canonical URL), the current *episode*: the trusted shares within the merge window and the trigger
  it fired, if any; a later share of the same link joins it ("also shared by") instead of a second session;
- one `budget` document: recent firings, from which cooldowns and daily caps are computed.

Every write is a compare-and-set on the KV revision; on a conflict the caller re-reads and decides again, so
two workers handling two shares of one link still create one trigger. Trigger ids are derived from the link and
episode, so a share redelivered after a crash finds its own trigger (or its own budget reservation) and
re-publishes it instead of creating another.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TypeVar

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field

from pipeline.messages import Share, TriggerFired
from pipeline.triggers.rules import Rules
from pipeline.triggers.scoring import Budget

MAX_SHARES_KEPT = 50  # beyond this a viral link only counts; 50 sharers already make the crowd term 0.98
BUDGET_KEY = "budget"
M = TypeVar("M", bound=BaseModel)


class LinkEpisode(BaseModel):
    model_config = ConfigDict(extra="forbid")

    canonical_url: str
    episode: int = 1
    started_at: datetime
    shares: list[Share] = Field(default_factory=list)
    more_shares: int = Field(default=0, description="Shares seen beyond MAX_SHARES_KEPT.")
    trigger: TriggerFired | None = None

    def has(self, share: Share) -> bool:
        return any(s.id == share.id for s in self.shares)

    def trigger_id(self, key: str) -> str:
        return f"fired:{key}.{self.episode}"


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

    def snapshot(self, rules: Rules, now: datetime, *, excluding: str) -> Budget:
        """The budget as seen by trigger `excluding`: its own reservation (a crash before it was published)
        must not block it on redelivery."""
        today = local_day(rules, now)
        rule_last: dict[str, datetime] = {}
        topic_last: dict[str, datetime] = {}
        today_by_rule: dict[str, int] = {}
        for trigger_id, firing in self.firings.items():
            if trigger_id == excluding:
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

    async def _load(self, key: str, model: type[M]) -> tuple[M | None, int | None]:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None, None
        return model.model_validate_json(entry.value or b""), entry.revision
