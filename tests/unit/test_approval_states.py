"""The approval state machine's rules, without a bus: which moves are allowed, and what a refusal says."""

from __future__ import annotations

from datetime import timedelta
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.domain.approval import NEXT, DecisionRefused, ProposalRecord, _transition, changed_fields
from pipeline.domain.sessions import propose
from pipeline.messages import ProposalState
from tests.unit.conftest import NOW, make_content

STATES: tuple[ProposalState, ...] = get_args(ProposalState)
TERMINAL = {"rejected", "expired", "cancelled", "archived"}


def fresh() -> ProposalRecord:
    return ProposalRecord(proposal=propose(make_content(), NOW))


def test_every_state_but_the_terminal_ones_can_move_on() -> None:
    assert set(NEXT) == set(STATES) - TERMINAL
    assert all(targets <= set(STATES) for targets in NEXT.values())


@given(st.lists(st.tuples(st.sampled_from(STATES), st.sampled_from(["ana", "ben", "clock"])), max_size=12))
def test_any_sequence_of_requests_leaves_a_history_that_follows_the_state_machine(
    requests: list[tuple[ProposalState, str]],
) -> None:
    record = fresh()
    for to, by in requests:
        try:
            changed = _transition(to, by, "", {})(record, NOW)
        except DecisionRefused as refused:
            assert record.proposal.id in str(refused)
            assert to not in NEXT.get(record.state, frozenset()) or NOW >= record.proposal.expires_at
            continue
        if changed is None:  # the same step by the same actor: nothing new
            assert record.state == to and record.last is not None and record.last.by == by
            continue
        record = changed
    state: ProposalState = "proposed"
    for entry in record.history:
        assert entry.from_state == state and entry.to_state in NEXT[state]
        state = entry.to_state
    assert state == record.state


def test_the_second_approver_is_told_who_approved_and_when() -> None:
    approved = _transition("approved", "ana", "", {})(fresh(), NOW)
    assert approved is not None
    refusal = r"already approved \(by ana at 10:15:30 UTC\); it cannot become approved"
    with pytest.raises(DecisionRefused, match=refusal):
        _transition("approved", "ben", "", {})(approved, NOW)
    assert _transition("approved", "ana", "", {})(approved, NOW) is None  # ana's double click is no new decision


def test_a_lapsed_proposal_cannot_be_approved_but_can_still_be_rejected() -> None:
    record = fresh()
    late = record.proposal.expires_at + timedelta(seconds=1)
    with pytest.raises(DecisionRefused, match="lapsed at"):
        _transition("approved", "ana", "", {})(record, late)
    rejected = _transition("rejected", "ana", "too late anyway", {})(record, late)
    assert rejected is not None and rejected.state == "rejected" and rejected.history[0].reason == "too late anyway"


def test_changed_fields_shows_before_and_after_for_people() -> None:
    before = fresh().proposal
    after = before.model_copy(
        update={"starts_at": before.starts_at + timedelta(hours=1), "channels": ["x"], "title": "Live: new"}
    )
    changes = changed_fields(before, after)
    assert set(changes) == {"starts_at", "channels", "title"}
    assert changes["channels"].before == "x, linkedin, facebook" and changes["channels"].after == "x"
    assert changes["starts_at"].after == after.starts_at.isoformat()
    assert changed_fields(before, before) == {}


def test_a_late_approver_is_told_who_approved_after_the_session_was_scheduled() -> None:
    approved = _transition("approved", "ana", "", {})(fresh(), NOW)
    assert approved is not None
    scheduled = _transition("scheduled", "actions", "jitsi room", {})(approved, NOW)
    assert scheduled is not None
    with pytest.raises(DecisionRefused, match=r"already approved \(by ana at 10:15:30 UTC\) and now scheduled"):
        _transition("approved", "ben", "", {})(scheduled, NOW)
