"""Trigger stage: consumes Share on `impromptu.shares`, emits TriggerFired on `impromptu.triggers.fired`."""

from __future__ import annotations

import structlog

from pipeline import bus
from pipeline.messages import Share, TriggerFired
from pipeline.settings import Settings
from pipeline.stage import StageRouter, emit
from pipeline.triggers.rules import Rules, evaluate

log = structlog.get_logger("pipeline.triggers")


def fire(share: Share, rules: Rules) -> TriggerFired | None:
    verdict = evaluate(rules, share)
    if not verdict.fired or verdict.rule is None:
        log.info("share.ignored", sharer=share.sharer, url=share.url, reasons=verdict.reasons)
        return None
    return TriggerFired.caused_by(
        share,
        id=f"fired:{share.id}",
        share=share,
        rule=verdict.rule.name,
        score=verdict.score,
        topics=verdict.topics,
        reasons=verdict.reasons,
        plan=verdict.rule.session,
    )


def trigger_router(settings: Settings, rules: Rules) -> StageRouter:
    router = StageRouter("trigger", settings)
    fired = router.output(bus.TRIGGERS_FIRED, TriggerFired, "A share passed a trigger rule.")

    @router.consume(bus.SHARES)
    async def handle_share(share: Share) -> None:
        trigger = fire(share, rules)
        if trigger is not None:
            await emit(fired, trigger)
            log.info("trigger.fired", sharer=share.sharer, url=share.url, rule=trigger.rule, score=trigger.score)

    return router
