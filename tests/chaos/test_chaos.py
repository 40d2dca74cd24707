"""The chaos suite in `make test`: a short run of the harness (tests/chaos/harness.py) with every kind of fault;
it fails with each broken invariant and its counts. `IMPROMPTU_CHAOS_SEED=N` replays a run's faults."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.harness import Plan, run_chaos, seed_from_env

pytestmark = [pytest.mark.nats, pytest.mark.chaos]


@pytest.mark.timeout(420)
async def test_under_faults_nothing_is_lost_nothing_twice_nothing_left_behind(tmp_path: Path) -> None:
    plan = Plan(seed=seed_from_env(), shares=40, workers=3, share_rate=2.0)
    broken, figures = await run_chaos(plan, tmp_path / "chaos")
    report = "\n".join(figures.lines())
    print(report)
    if broken:
        pytest.fail(f"seed {plan.seed}: {len(broken)} invariant(s) broken:\n- " + "\n- ".join(broken) + "\n" + report)
