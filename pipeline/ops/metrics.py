"""Prometheus metrics of one pipeline: FastStream's own NATS metrics plus counters of what the stages did.

Every counter is driven by a broker middleware, so no stage has to remember to count:
- what a stage emits is counted once JetStream stored it (a re-publish JetStream dropped as a duplicate is not);
- shares and decisions are counted once a stage handled them without error (a retried or dead-lettered one is not).
So the counters match the messages on the stream. Each pipeline owns its registry (tests build many pipelines).
One gauge, proposals by state now, is not counted but read from KV by the clock (`set_proposal_states`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from faststream import BaseMiddleware
from faststream.message import StreamMessage
from faststream.nats import NatsBroker
from faststream.nats.prometheus import NatsPrometheusMiddleware
from faststream.response import PublishCommand
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from pipeline import bus
from pipeline.messages import IN_PLAY, DeadLetter, EnrichmentFailed, OutreachResult, TriggerFired
from pipeline.ops.status import STAGE_CONSUMERS

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


class PipelineMetrics:
    """The registry and counters of one pipeline; `install` puts them on its broker."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        counter = self._counter
        self.shares_received = counter("impromptu_shares_received", "Shares the trigger stage handled.", "source")
        self.triggers_fired = counter("impromptu_triggers_fired", "Triggers fired, by rule.", "rule")
        self.shares_joined = counter("impromptu_shares_joined", "Shares of a link that already fired (also shared by).")
        self.proposals_created = counter("impromptu_proposals_created", "Session proposals emitted.")
        self.proposals_decided = counter(
            "impromptu_proposals_decided", "Facilitator decisions the actions stage handled.", "decision"
        )
        self.outreach_posts = counter(
            "impromptu_outreach_posts", "Announcements, by channel, kind and outcome.", "channel", "kind", "status"
        )
        self.fetch_refusals = counter(
            "impromptu_fetch_refusals", "Shared pages that could not be read (EnrichmentFailed), by reason.", "reason"
        )
        self.proposals_entered = counter(
            "impromptu_proposals_entered",
            "Proposals that moved into each state (approved, scheduled, live, ended, archived, rejected, …).",
            "state",
        )
        self.dead_letters = counter("impromptu_dead_letters", "Messages a stage gave up on, by stage.", "stage")
        # a gauge, read from KV by the clock: every worker reports the same whole-pipeline figure (use max, not sum)
        self.proposals_now = Gauge(
            "impromptu_proposals",
            "Proposals in play (proposed, approved, scheduled, live) by state now, from the KV index "
            "(refreshed by every worker's clock).",
            labelnames=["state"],
            registry=self.registry,
        )
        self.faststream = NatsPrometheusMiddleware(registry=self.registry, app_name="impromptu")

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        return Counter(name, documentation, labelnames=labels, registry=self.registry)

    def install(self, broker: NatsBroker) -> None:
        broker.add_middleware(self.faststream)
        broker.add_middleware(self.middleware)

    def middleware(self, msg: Any, /, *, context: Any) -> _CountingMiddleware:
        """FastStream builds one middleware per message (or publish) through this factory."""
        return _CountingMiddleware(msg, context=context, metrics=self)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def count_emitted(self, subject: str, message: object) -> None:
        if isinstance(message, TriggerFired):
            self.triggers_fired.labels(rule=message.rule).inc()
        elif subject == bus.TRIGGERS_JOINED.subject:
            self.shares_joined.inc()
        elif subject == bus.PROPOSALS_CREATED.subject:
            self.proposals_created.inc()
        elif isinstance(message, OutreachResult):
            self.outreach_posts.labels(channel=message.channel, kind=message.kind, status=message.status).inc()
        elif isinstance(message, EnrichmentFailed):
            self.fetch_refusals.labels(reason=message.reason).inc()
        elif isinstance(message, DeadLetter):
            self.dead_letters.labels(stage=message.stage).inc()

    def set_proposal_states(self, counts: Mapping[str, int]) -> None:
        # every state in play, so one that empties shows 0 rather than its old count; finished proposals are not
        # read (that would cost a read of every proposal ever): impromptu_proposals_entered_total counts them
        for state in sorted(IN_PLAY):
            self.proposals_now.labels(state=state).set(counts.get(state, 0))

    def count_handled(self, subject: str, body: dict[str, Any]) -> None:
        if subject == bus.SHARES.subject:
            self.shares_received.labels(source=str(body.get("source"))).inc()
        elif subject == bus.DECISIONS.subject:
            self.proposals_decided.labels(decision=str(body.get("decision"))).inc()
        elif subject == bus.PROPOSALS_TRANSITIONS.subject and body.get("from_state") != body.get(
            "to_state"
        ):  # not edits
            self.proposals_entered.labels(state=str(body.get("to_state"))).inc()


class _CountingMiddleware(BaseMiddleware):
    def __init__(self, msg: Any, /, *, context: Any, metrics: PipelineMetrics) -> None:
        super().__init__(msg, context=context)
        self.metrics = metrics

    async def publish_scope(self, call_next: Callable[[PublishCommand], Awaitable[Any]], cmd: PublishCommand) -> Any:
        result = await call_next(cmd)
        if not getattr(result, "duplicate", False):  # JetStream dropped a re-publish: nothing new on the bus
            self.metrics.count_emitted(cmd.destination, cmd.body)
        return result

    async def consume_scope(self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: Any) -> Any:
        result = await call_next(msg)  # raises when the stage retries or dead-letters: not counted
        subject = msg.raw_message.subject
        metadata = msg.raw_message.metadata
        # a subject read by two stages (transitions: actions and outreach) is counted by its first reader only
        counted_here = metadata is None or metadata.consumer == COUNTED_BY.get(subject)
        if subject in (bus.SHARES.subject, bus.DECISIONS.subject, bus.PROPOSALS_TRANSITIONS.subject) and counted_here:
            self.metrics.count_handled(subject, _json_object(msg.body))
        return result


COUNTED_BY: dict[str, str] = {c.subject: c.durable for c in reversed(STAGE_CONSUMERS)}  # subject -> first reader


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(body)
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def metrics_of(broker: NatsBroker) -> PipelineMetrics | None:
    """The metrics `install`ed on `broker`, if any."""
    for middleware in broker.config.broker_middlewares:
        owner = getattr(middleware, "__self__", None)
        if isinstance(owner, PipelineMetrics):
            return owner
    return None
