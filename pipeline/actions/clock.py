"""The actions stage's clock: time moves proposals (undecided ones lapse or are approved by the clock, scheduled
sessions go live and end), on every worker that runs the stage; and proposals stored before the index are indexed."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import structlog
from faststream.nats import NatsBroker

from pipeline import stores
from pipeline.domain import proposal_index
from pipeline.domain.approval import advance_by_clock, reindex
from pipeline.messages import utc_now

log = structlog.get_logger("pipeline.app")

StateCounts = Callable[["Counter[str]"], None]


async def run_clock(broker: NatsBroker, every: float, count_states: StateCounts | None = None) -> None:
    """Let time move proposals: undecided ones lapse, scheduled sessions go live and end. Safe on every worker:
    each move is a compare-and-set, so when several workers see the same due proposal, one moves it. The same
    read of the index of proposals in play is handed to `count_states` (the gauge of proposals in play by state)."""
    while True:
        try:
            kv = await stores.bucket(broker, stores.PROPOSALS)
            entries = await proposal_index.in_play(kv)
            states = {proposal_id: entry.state for proposal_id, entry in entries.items()}
            for record in await advance_by_clock(broker, in_play=entries):
                log.info("proposal.clock", proposal_id=record.proposal.id, state=record.state)
                states[record.proposal.id] = record.state
            if count_states is not None:
                count_states(Counter(states.values()))
            await proposal_index.prune(kv, utc_now())
        except Exception as error:  # NATS away for a moment: try again next tick
            log.warning("proposal.clock_failed", error=f"{type(error).__name__}: {error}")
        await asyncio.sleep(every)


async def index_proposals(broker: NatsBroker) -> None:
    """Index proposals stored before the index existed (once per bucket; every worker checks at start)."""
    try:
        if count := await reindex(broker, unless_done=True):
            log.info("proposals.indexed", proposals=count)
    except Exception as error:  # the clock and every write repair the index as they go; say it and carry on
        log.warning("proposals.index_failed", error=f"{type(error).__name__}: {error}")
