"""The approval service's pure parts: the host's local time shown next to the UTC start."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pipeline.actions.service import Approvals
from pipeline.domain.live_rules import LiveRules
from pipeline.domain.sessions import propose
from pipeline.settings import Settings
from tests.unit.conftest import NOW, make_content

RULES = """
timezone: Europe/Berlin
facilitators:
  - name: Ana
  - name: Sam
    timezone: America/New_York
  - name: Uli
    timezone: UTC
"""


def approvals(tmp_path: Path) -> Approvals:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    return Approvals(None, Settings(data_dir=tmp_path), LiveRules.load(rules))  # type: ignore[arg-type]  # no bus


def test_the_start_is_also_shown_in_the_hosts_own_time_zone(tmp_path: Path) -> None:
    service = approvals(tmp_path)
    proposal = propose(make_content(), NOW).model_copy(update={"starts_at": datetime(2026, 3, 30, 14, 0, tzinfo=UTC)})

    def shown(host: str | None) -> str | None:
        return service.host_time(proposal.model_copy(update={"facilitator": host}))

    assert shown("Ana") == "Mon 30 Mar 16:00 Europe/Berlin"  # the file's zone, summer time
    assert shown("Sam") == "Mon 30 Mar 10:00 America/New_York"
    assert shown("Uli") is None  # the page already says UTC
    assert shown(None) is None and shown("Nobody") is None


def test_the_form_zone_is_the_hosts_else_the_rules_files(tmp_path: Path) -> None:
    service = approvals(tmp_path)
    proposal = propose(make_content(), NOW)

    def zone(host: str | None) -> str:
        return service.local_zone(proposal.model_copy(update={"facilitator": host})).key

    assert (zone("Sam"), zone("Ana"), zone("Uli")) == ("America/New_York", "Europe/Berlin", "UTC")
    assert zone(None) == zone("Nobody") == "Europe/Berlin"  # no known host: the rules file's zone
