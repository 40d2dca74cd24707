"""The index of proposals on a real nats-server: the proposal path reads what it needs by key, whatever the history.

Before it, every new proposal, approval, clock tick and queue page read the whole proposals bucket: O(all proposals
ever) per step, and a server consumer left behind each time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from faststream.nats import NatsBroker
from nats.js.kv import KeyValue

from pipeline import stores
from pipeline.actions.service import Approvals, booked_now
from pipeline.domain import approval, proposal_index
from pipeline.domain.approval import ProposalRecord
from pipeline.domain.live_rules import LiveRules
from pipeline.domain.sessions import propose
from pipeline.domain.slots import Slot
from pipeline.messages import SessionProposal, utc_now
from pipeline.settings import Settings
from tests.integration.bus_helpers import seed_proposal
from tests.unit.conftest import make_content

pytestmark = pytest.mark.nats


def a_proposal(n: int, *, in_hours: float = 2, facilitator: str | None = "ana") -> SessionProposal:
    now = utc_now()
    slot = Slot(facilitator=facilitator, starts_at=now + timedelta(hours=in_hours), reason="test")
    draft = propose(make_content(title=f"Session {n}"), now, slot=slot, margin=timedelta(minutes=5))
    return draft.model_copy(update={"id": f"proposal-test{n:05d}"})


@pytest.fixture
def whole_bucket_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every read of the whole proposals bucket (old code: `watchall`; new: a scan of every record key)."""
    reads: list[str] = []
    watch = KeyValue.watch

    async def counted(self: KeyValue, keys: str, **kwargs: object) -> KeyValue.KeyWatcher:
        if self._name == stores.PROPOSALS and keys in (">", approval.RECORD_KEYS):
            reads.append(keys)
        return await watch(self, keys, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(KeyValue, "watch", counted)
    yield reads


@pytest.fixture
def kv_gets(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every request a read makes: a get by key, or a ranged read (one consumer, deleted after)."""
    requests: list[str] = []
    get, scan = KeyValue.get, stores.scan

    async def counted_get(self: KeyValue, key: str, *args: object, **kwargs: object) -> KeyValue.Entry:
        requests.append(key)
        return await get(self, key, *args, **kwargs)  # type: ignore[arg-type]

    async def counted_scan(kv: KeyValue, keys: str = ">", **kwargs: bool) -> list[KeyValue.Entry]:
        requests.append(keys)
        return await scan(kv, keys, **kwargs)

    monkeypatch.setattr(KeyValue, "get", counted_get)
    monkeypatch.setattr(stores, "scan", counted_scan)
    yield requests


async def test_the_proposal_path_never_reads_the_whole_bucket(
    pipeline: NatsBroker, client: NatsBroker, settings: Settings, whole_bucket_reads: list[str]
) -> None:
    approvals = Approvals(client, settings, LiveRules.load(settings.rules_file))
    proposal = await seed_proposal(client)  # the actions stage checked the facilitators' time
    assert [r.proposal.id for r in await approvals.listed("proposed")] == [proposal.id]  # the queue, the API
    assert [r.proposal.id for r in await approvals.recent()] == [proposal.id]  # the history view
    await approvals.approve(proposal.id, by="ana")  # checks the slot again
    record = await approval.get_record(client, proposal.id)
    assert [r.state for r in await approval.advance_by_clock(client, record.proposal.starts_at)] in (["live"], [])
    assert whole_bucket_reads == []


async def test_a_slot_check_costs_the_same_with_a_long_history(
    client: NatsBroker, kv_gets: list[str], whole_bucket_reads: list[str]
) -> None:
    booked = await approval.save_new(client, a_proposal(0))
    await approval.decide(client, booked.id, "approved", by="ana")
    kv_gets.clear()
    assert [b.title for b in await booked_now(client)] == [booked.title]
    cost_alone = len(kv_gets)

    for n in range(1, 151):  # finished proposals: they hold nobody's time
        done = await approval.save_new(client, a_proposal(n))  # the same day: a day costs one read
        await approval.decide(client, done.id, "rejected", by="ana", reason="not now")
    kv_gets.clear()
    assert [b.title for b in await booked_now(client)] == [booked.title]
    assert len(kv_gets) == cost_alone, kv_gets
    assert whole_bucket_reads == []


async def test_an_edited_start_moves_the_proposal_to_its_new_day(client: NatsBroker) -> None:
    proposal = await approval.save_new(client, a_proposal(1))
    later = proposal.starts_at + timedelta(days=3)

    await approval.revise(
        client, proposal.id, by="ana", revised=lambda r, _: r.proposal.model_copy(update={"starts_at": later})
    )
    kv = await stores.bucket(client, stores.PROPOSALS)
    assert (await proposal_index.in_play(kv))[proposal.id].starts_at == later
    assert await stores.scan(kv, proposal_index.play_key(proposal.starts_at, proposal.id)) == []


async def test_the_clock_judges_on_the_record_and_repairs_an_index_left_behind(client: NatsBroker) -> None:
    proposal = await approval.save_new(client, a_proposal(2))
    kv = await stores.bucket(client, stores.PROPOSALS)
    # a worker wrote the edited record and died before the index: the index still has the old deadline
    later = proposal.model_copy(
        update={
            "starts_at": proposal.starts_at + timedelta(days=2),
            "expires_at": proposal.expires_at + timedelta(days=2),
        }
    )
    entry = await kv.get(proposal.id)
    edited = ProposalRecord.model_validate_json(entry.value or b"").model_copy(update={"proposal": later})
    await kv.update(proposal.id, edited.model_dump_json().encode(), last=entry.revision)

    assert await approval.advance_by_clock(client, proposal.expires_at + timedelta(minutes=1)) == []
    assert (await approval.get_record(client, proposal.id)).state == "proposed"  # its real deadline is 2 days off
    assert (await proposal_index.in_play(kv))[proposal.id].expires_at == later.expires_at  # the index caught up


async def test_proposals_stored_before_the_index_are_indexed_once(client: NatsBroker) -> None:
    kv = await stores.bucket(client, stores.PROPOSALS)
    old = [a_proposal(n) for n in range(3)]
    for proposal in old:  # as an older version stored them: records only
        await kv.put(proposal.id, ProposalRecord(proposal=proposal).model_dump_json().encode())
    assert await proposal_index.in_play(kv) == {}

    assert await approval.reindex(client, unless_done=True) == 3
    assert set(await proposal_index.in_play(kv)) == {p.id for p in old}
    assert sorted(await proposal_index.recent_ids(kv, 10)) == sorted(p.id for p in old)
    assert await approval.reindex(client, unless_done=True) == 0  # already done: no second read of the bucket


async def test_finished_proposals_leave_the_index_and_past_empty_days_are_forgotten(client: NatsBroker) -> None:
    kv = await stores.bucket(client, stores.PROPOSALS)
    proposal = await approval.save_new(client, a_proposal(3, in_hours=1))
    await approval.decide(client, proposal.id, "rejected", by="ana", reason="no")
    assert await proposal_index.in_play(kv) == {}
    days = [proposal_index.utc_day(proposal.starts_at)]
    assert await proposal_index._days(kv, proposal_index.DAYS) == days

    await proposal_index.prune(kv, utc_now() + timedelta(days=1))
    assert await proposal_index._days(kv, proposal_index.DAYS) == days  # not past enough yet
    await proposal_index.prune(kv, proposal.starts_at + proposal_index.PRUNE_AFTER + timedelta(days=1))
    assert await proposal_index._days(kv, proposal_index.DAYS) == []


async def test_recent_lists_the_newest_first_up_to_the_limit(client: NatsBroker) -> None:
    for n in range(5):
        await approval.save_new(client, a_proposal(n))
    newest = await approval.recent(client, 3)
    assert [r.proposal.id for r in newest] == ["proposal-test00004", "proposal-test00003", "proposal-test00002"]
