"""Trigger stage: consumes Share on `impromptu.shares`; emits TriggerFired on `impromptu.triggers.fired`, or
SharerJoined on `impromptu.triggers.joined` when the link already fired within the merge window. A share that does
neither (untrusted, already among the sharers, no rule passing) leaves its verdict in the bucket impromptu-verdicts
(one key per share, 30 days), where `impromptu trace` reads why."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from faststream.nats.annotations import NatsBroker
from nats.js.kv import KeyValue

from pipeline import bus, stores
from pipeline.domain.canonical import canonical_url, link_key
from pipeline.domain.live_rules import LiveRules
from pipeline.domain.scoring import Known, Verdict, evaluate
from pipeline.domain.trigger_state import (
    BUDGET_KEY,
    Firing,
    LinkEpisode,
    TriggerState,
    budget_memory,
    local_day,
    next_episode,
    reopened,
    with_share,
)
from pipeline.errors import RetryableError
from pipeline.messages import Message, Share, Sharer, SharerJoined, TriggerFired, utc_now
from pipeline.settings import Settings
from pipeline.stage import STAGE, Emits, Outputs, Route, StageRouter, stage_router
from pipeline.triggers.explain import kept_verdict, verdict_key

log = structlog.get_logger("pipeline.triggers")

CAS_ATTEMPTS = 20


@dataclass(frozen=True)
class Outcome:
    kind: str  # "fired" | "joined" | "ignored"
    reason: str
    message: Message | None = None
    reopens: str | None = None  # the trigger whose page could not be read, when this one tries it again
    verdict: Verdict | None = None  # the rules' judgement, when they were asked (each rule's first failure)


def trigger_of(known: Known, verdict: Verdict, episode: LinkEpisode, trigger_id: str) -> TriggerFired:
    winner = verdict.winner
    assert winner is not None
    share = verdict.facts.share
    return TriggerFired.caused_by(
        share,
        id=trigger_id,
        share=share,
        canonical_url=episode.canonical_url,
        shared_by=verdict.facts.sharers,
        rule=winner.rule.name,
        score=winner.terms.total,
        terms=winner.terms,
        author=verdict.facts.author.name if verdict.facts.author else None,
        topics=winner.topics,
        reasons=[f"{c.condition}: {c.detail}" for c in winner.checks],
        plan=known.rules.plan(winner.rule),
    )


def joined(trigger: TriggerFired, share: Share, earlier: list[Share], known: Known) -> Outcome:
    """A trusted share of a link that already fired: "also shared by", once per person."""
    person = known.person(share)
    if person is None:
        return Outcome("ignored", f"{share.sharer} is not in the trusted network (the link already fired)")
    if any(s.share_id == share.id or s.name == person.name for s in trigger.shared_by):
        return Outcome("ignored", f"{person.name} is already among the trigger's sharers")
    if any(known.person(s) == person for s in earlier):
        return Outcome("ignored", f"{person.name} already shared this link")
    sharer = Sharer(
        name=person.name, handle=share.sharer, trust=person.trust, share_id=share.id, shared_at=share.shared_at
    )
    message = SharerJoined.caused_by(
        share,
        id=f"joined:{trigger.id}:{share.id}",
        trigger_id=trigger.id,
        canonical_url=trigger.canonical_url,
        sharer=sharer,
        share=share,
    )
    return Outcome("joined", f"also shared by {person.name}", message)


class TriggerJudge:
    """Decides one share against the live rules and the shared state; safe to call again for a redelivery."""

    def __init__(self, live: LiveRules, state: TriggerState, clock: Callable[[], datetime] = utc_now) -> None:
        self.live = live
        self.state = state
        self.clock = clock

    async def decide(self, share: Share) -> Outcome:
        known = self.live.known
        if known.only_trusted and known.person(share) is None:
            return Outcome("ignored", f"{share.sharer} is not in the trusted network")  # no state to touch
        canonical = canonical_url(share.url)
        key = link_key(canonical)
        window = timedelta(minutes=known.rules.merge_window_minutes)
        for attempt in range(CAS_ATTEMPTS):
            now = self.clock()
            # Most links are new: first assume so and let the create-if-absent write tell us otherwise, which
            # saves a read per share; any later attempt reads what is stored.
            optimistic = attempt == 0
            stored, revision = (None, None) if optimistic else await self.state.episode(key)
            episode = next_episode(stored, canonical, now, window)
            if stored is not None and episode.episode != stored.episode and stored.has(share):
                episode = stored  # a redelivery of a share from the previous episode stays in it
            elif episode is stored and stored.reopened_by_share(share):
                episode = reopened(stored, now, by=f"share {share.id}")  # its page failed for a while: try again
            updated = with_share(episode, share)
            changed = updated is not episode or episode is not stored
            if episode.trigger is not None:
                if changed and not await self.state.write(key, updated, revision):
                    continue
                if episode.trigger.share.id == share.id:
                    return Outcome("fired", "re-published after redelivery", episode.trigger)
                return joined(episode.trigger, share, [s for s in updated.shares if s.id != share.id], known)
            earlier = [s for s in updated.shares if s.id != share.id]
            verdict = evaluate(known, share, now=now, earlier=earlier)
            if verdict.winner is None:
                if changed and not await self.state.write(key, updated, revision):
                    continue
                return Outcome("ignored", verdict.summary, verdict=verdict)
            if optimistic and known.uses_budget:
                continue  # reserving a cooldown or cap needs the real episode number: read first
            outcome = await self._fire(known, verdict, earlier, updated, key, revision, now)
            if outcome is not None:
                return outcome
        raise RetryableError(f"link {canonical} changed {CAS_ATTEMPTS} times while deciding; will retry")

    async def _fire(
        self,
        known: Known,
        verdict: Verdict,
        earlier: list[Share],
        episode: LinkEpisode,
        key: str,
        revision: int | None,
        now: datetime,
    ) -> Outcome | None:
        """Re-judge with cooldowns and caps, reserve the budget, then mark the episode; None: lost a race, retry."""
        trigger_id = episode.trigger_id(key)
        if known.uses_budget:
            budget, budget_revision = await self.state.budget()
            failed = episode.reopened.failed_trigger_id if episode.reopened else trigger_id
            snapshot = budget.snapshot(known.rules, now, excluding={trigger_id, failed})
            verdict = evaluate(known, verdict.facts.share, now=now, earlier=earlier, budget=snapshot)
            winner = verdict.winner
            if winner is None:
                if not await self.state.write(key, episode, revision):
                    return None
                return Outcome("ignored", verdict.summary, verdict=verdict)
            firing = Firing(rule=winner.rule.name, topics=winner.topics, at=now, day=local_day(known.rules, now))
            if trigger_id not in budget.firings:
                reserved = budget.reserve(trigger_id, firing, budget_memory(known.rules))
                if not await self.state.write(BUDGET_KEY, reserved, budget_revision):
                    return None
        trigger = trigger_of(known, verdict, episode, trigger_id)
        if not await self.state.write(key, episode.model_copy(update={"trigger": trigger}), revision):
            return None  # another worker wrote the link meanwhile; our reservation is keyed by the same id
        reopens = episode.reopened.failed_trigger_id if episode.reopened else None
        return Outcome("fired", verdict.summary, trigger, reopens=reopens)


class TriggerStage:
    """What the trigger handler shares across shares, given to it as `stage` (pipeline/stage.py): the live rules,
    the stage's publishers, and the judge and verdict bucket, opened on the first share (the broker is connected by
    then). A router belongs to one broker, so these are that broker's buckets."""

    def __init__(self, live: LiveRules, outputs: Outputs) -> None:
        self.live = live
        self.outputs = outputs
        self._judge: TriggerJudge | None = None
        self._verdicts: KeyValue | None = None

    async def judge(self, broker: NatsBroker) -> TriggerJudge:
        if self._judge is None:
            self._judge = TriggerJudge(self.live, TriggerState(await stores.bucket(broker, stores.TRIGGERS)))
        return self._judge

    async def keep_verdict(self, broker: NatsBroker, share: Share, outcome: Outcome) -> None:
        """Before the ack: a redelivery judges again and puts the same record (a put, not a create)."""
        if self._verdicts is None:
            self._verdicts = await stores.bucket(broker, stores.VERDICTS)
        kept = kept_verdict(share, outcome.reason, outcome.verdict)
        await self._verdicts.put(verdict_key(share.id), kept.model_dump_json().encode())


async def handle_share(share: Share, broker: NatsBroker, stage: TriggerStage = STAGE) -> None:
    outcome = await (await stage.judge(broker)).decide(share)
    if isinstance(outcome.message, TriggerFired):
        await stage.outputs.emit(bus.TRIGGERS_FIRED, outcome.message)
        log.info("trigger.fired", sharer=share.sharer, url=share.url, summary=outcome.reason)
        if outcome.reopens is not None:
            log.info("trigger.reopened", trigger_id=outcome.message.id, failed_trigger_id=outcome.reopens)
    elif isinstance(outcome.message, SharerJoined):
        await stage.outputs.emit(bus.TRIGGERS_JOINED, outcome.message)
        log.info("trigger.joined", sharer=share.sharer, trigger_id=outcome.message.trigger_id)
    else:
        await stage.keep_verdict(broker, share, outcome)
        log.info("share.ignored", sharer=share.sharer, url=share.url, reason=outcome.reason)


FIRED = Emits(bus.TRIGGERS_FIRED, "A share passed a trigger rule.")
JOINED = Emits(bus.TRIGGERS_JOINED, "Another trusted sharer of a link that already fired.")

# What the trigger stage reads and emits; shares are judged `trigger_concurrency` at once (compare-and-set state).
ROUTES = (Route(handle_share, bus.SHARES, emits=(FIRED, JOINED), concurrent=True),)


def trigger_router(settings: Settings, live: LiveRules) -> StageRouter:
    return stage_router(
        "trigger", settings, ROUTES, lambda outputs: TriggerStage(live, outputs), settings.trigger_concurrency
    )
