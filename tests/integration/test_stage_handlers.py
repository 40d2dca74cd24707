"""Each stage's handlers, and the ops pages' routes, are module-level functions: imported and called alone, with
their resources, on a real nats-server where no stage consumes. The seed share walks trigger -> enrich -> actions
by hand, and the session it leads to is handed to outreach and archive the same way."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from faststream.nats import NatsBroker

from pipeline import bus
from pipeline.actions.stage import ROUTES as ACTIONS_ROUTES
from pipeline.actions.stage import propose_session, schedule
from pipeline.app import create_broker, prepare_bus
from pipeline.archive.stage import ROUTES as ARCHIVE_ROUTES
from pipeline.archive.stage import list_reading
from pipeline.demo import ASSETS, article_server, seed_share
from pipeline.domain import catalog
from pipeline.domain.describe import reading_item
from pipeline.enrich.stage import ROUTES as ENRICH_ROUTES
from pipeline.enrich.stage import handle_trigger
from pipeline.messages import (
    AnnouncementDue,
    EnrichedContent,
    FacilitatorDecision,
    SessionProposal,
    TriggerFired,
)
from pipeline.outreach.stage import ROUTES as OUTREACH_ROUTES
from pipeline.outreach.stage import plan_announcements
from pipeline.providers import CreatedSession
from pipeline.settings import Settings
from pipeline.stage import Route
from pipeline.triggers.stage import ROUTES as TRIGGER_ROUTES
from pipeline.triggers.stage import handle_share
from pipeline.web.ops import FLOW, OpsPages, ops_status
from tests.integration.bus_helpers import models_on


@pytest.fixture
async def idle_stages(settings: Settings) -> AsyncIterator[tuple[NatsBroker, dict[str, Any]]]:
    """Every stage's router on a connected broker, none consuming; with each stage's resources by name."""
    broker = create_broker(settings)
    await prepare_bus(broker, settings)  # connected, the stream declared; no subscriber started
    try:
        yield broker, {router.stage_name: router.resources for router in broker.routers}  # type: ignore[attr-defined]
    finally:
        await broker.stop()


async def test_each_stage_handler_called_alone_does_its_part(
    idle_stages: tuple[NatsBroker, dict[str, Any]],
) -> None:
    broker, stage = idle_stages
    with article_server((ASSETS / "bersin-article.html").read_bytes()) as url:
        await handle_share(seed_share(url), broker, stage=stage["trigger"])
        (fired,) = await models_on(broker, bus.TRIGGERS_FIRED.subject, TriggerFired)
        # the message is read only when a retryable failure decides between retrying and giving up
        await handle_trigger(fired, broker, message=None, stage=stage["enrich"])  # type: ignore[arg-type]
    (content,) = await models_on(broker, bus.CONTENT_ENRICHED.subject, EnrichedContent)
    assert content.trigger.id == fired.id and content.article.title

    await propose_session(content, broker, stage=stage["actions"])
    (proposal,) = await models_on(broker, bus.PROPOSALS_CREATED.subject, SessionProposal)
    assert proposal.content.id == content.id and proposal.provider == stage["actions"].provider.name

    decision = FacilitatorDecision.caused_by(
        proposal, id="decision:alone", proposal=proposal, decision="approved", decided_by="fay"
    )
    session = schedule(decision, CreatedSession(provider="jitsi", provider_id="alone", join_url="https://meet.test/x"))
    await plan_announcements(session, stage=stage["outreach"])
    due = await models_on(broker, bus.OUTREACH_DUE.subject, AnnouncementDue)
    assert [(d.channel, d.kind) for d in due] == [(channel, "scheduled") for channel in proposal.channels]

    await list_reading(session, broker)
    item = reading_item(session)
    listed = await catalog.read(await catalog.library_bucket(broker), catalog.article_key(item.article_id), type(item))
    assert listed is not None and listed[0].title == item.title


@pytest.mark.parametrize(
    "routes",
    [TRIGGER_ROUTES, ENRICH_ROUTES, ACTIONS_ROUTES, OUTREACH_ROUTES, ARCHIVE_ROUTES],
    ids=["trigger", "enrich", "actions", "outreach", "archive"],
)
def test_each_route_handler_is_the_module_level_function_of_its_stage(routes: tuple[Route, ...]) -> None:
    """A handler in a stage's table is importable by its name (not a closure a router-building function made)."""
    for route in routes:
        module = __import__(route.handler.__module__, fromlist=[route.handler.__name__])
        assert getattr(module, route.handler.__name__) is route.handler, route


async def test_an_ops_route_called_alone_reads_the_bus_it_is_given(
    idle_stages: tuple[NatsBroker, dict[str, Any]], settings: Settings
) -> None:
    broker, _ = idle_stages
    await bus.publish(broker, bus.SHARES, seed_share("https://example.com/alone"))
    response = await ops_status(who="olga", ops=OpsPages(settings, broker))
    status = json.loads(response.body)
    assert [stage["name"] for stage in status["stages"]] == list(FLOW)
    assert status["stages"][0]["inputs"] == {bus.SHARES.subject: 1}
