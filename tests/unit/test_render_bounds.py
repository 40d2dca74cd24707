"""A custom template cannot run away: each render is bounded in time and output, in-process (the sandbox's clock,
with the template's name and line) and in the template workers (a hard time and memory limit, off the loop)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.channels.bounded import TemplateWorkers
from pipeline.channels.registry import CHANNELS
from pipeline.channels.render import TemplateRefused, environment, render
from pipeline.messages import ScheduledSession
from tests.loop_pauses import loop_pauses

BuildSession = Callable[..., ScheduledSession]
NESTED_RANGES = "Hello {{ title }}\n{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}\n"


@pytest.fixture
def session(build_session: BuildSession) -> ScheduledSession:
    return build_session()


def custom(folder: Path, source: str, channel: str = "x") -> Path:
    (folder / channel).mkdir(parents=True, exist_ok=True)
    (folder / channel / "scheduled.j2").write_text(source, encoding="utf-8")
    return folder


def refused(folder: Path, session: ScheduledSession, **bounds: float) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(TemplateRefused) as caught:
        render(environment(folder), "x", "scheduled", session, **bounds)  # type: ignore[arg-type]
    return str(caught.value), time.monotonic() - started


@pytest.mark.parametrize(
    ("source", "line"),
    [
        (NESTED_RANGES, 2),
        # loops over a list: no call inside, only the loop steps themselves can stop it
        ("{% set r = range(100000)|list %}\n\n{% for a in r %}{% for b in r %}{% endfor %}{% endfor %}", 3),
        # a filter applied per item by map (no loop, no call in the template's own code)
        ("x\n{{ range(100000)|map('center', 2000)|map('wordcount')|sum }}", 2),
        # recursion that fans out: each call checks the clock
        ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}\n{{ f(60) }}", 1),
    ],
)
def test_a_runaway_template_is_refused_at_its_bound_with_name_and_line(
    tmp_path: Path, session: ScheduledSession, source: str, line: int
) -> None:
    reason, took = refused(custom(tmp_path, source), session, seconds=0.3)
    assert reason.startswith(f"template_timeout: x/scheduled.j2:{line}: rendering took over 0.3 s"), reason
    assert took < 1.5


def test_output_is_bounded_before_the_channels_own_limit(tmp_path: Path, session: ScheduledSession) -> None:
    source = "{{ title }}\n\n{% for a in range(100000) %}{{ 'x' * 1000 }}{% endfor %}"
    reason, took = refused(custom(tmp_path, source), session, max_output=65536)
    assert reason == "template_output: x/scheduled.j2:3: renders more than 65536 characters"
    assert took < 1


def test_doubling_a_string_is_refused_before_it_exhausts_memory(tmp_path: Path, session: ScheduledSession) -> None:
    source = "{% set ns = namespace(s='x' * 1000) %}\n{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}"
    reason, _ = refused(custom(tmp_path, source), session)
    assert reason.startswith("template_unsafe: x/scheduled.j2:2: the result would be too large"), reason


def test_the_shipped_templates_render_as_before_and_fast(session: ScheduledSession) -> None:
    env = environment()
    for channel in CHANNELS:
        render(env, channel, "scheduled", session)  # compiled once
    started = time.perf_counter()
    for channel in CHANNELS:
        assert render(env, channel, "scheduled", session)
    assert time.perf_counter() - started < 0.5


def test_a_bound_ends_with_its_render(tmp_path: Path, session: ScheduledSession) -> None:
    """The clock belongs to one render: an in-process render after a refused one has its own full bound."""
    refused(custom(tmp_path, NESTED_RANGES), session, seconds=0.1)
    slow = custom(tmp_path / "slow", "{% for a in range(3000) %}{% for b in range(100) %}{% endfor %}{% endfor %}ok")
    assert render(environment(slow), "x", "scheduled", session, seconds=30) == "ok"


# --- in the template workers -------------------------------------------------------------------------------------


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., TemplateWorkers]]:
    made: list[TemplateWorkers] = []

    def make(source: str, **options: float) -> TemplateWorkers:
        made.append(TemplateWorkers(custom(tmp_path / f"t{len(made)}", source), **options))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for each in made:
        each.stop()


async def test_workers_refuse_a_runaway_while_the_event_loop_runs(
    workers: Callable[..., TemplateWorkers], session: ScheduledSession
) -> None:
    templates = workers(NESTED_RANGES, seconds=0.5)
    assert (await templates.render("linkedin", "scheduled", session)).strip()  # started, and a shipped template
    async with loop_pauses() as gaps:
        started = time.monotonic()
        with pytest.raises(TemplateRefused) as caught:
            await templates.render("x", "scheduled", session)
        took = time.monotonic() - started
    assert str(caught.value).startswith("template_timeout: x/scheduled.j2:2: rendering took over 0.5 s")
    assert took < 2.5
    assert len(gaps) > 20 and max(gaps) < 0.2  # the loop kept running all along


async def test_workers_kill_a_render_the_sandbox_clock_cannot_stop(
    workers: Callable[..., TemplateWorkers], session: ScheduledSession
) -> None:
    """Filters chained in one expression run without a check in between: the worker is killed and replaced."""
    chain = "('ab' * 100000)" + "|wordwrap(1, true)" * 8
    templates = workers(f"{{{{ {chain}|length }}}}", seconds=0.3)
    started = time.monotonic()
    with pytest.raises(TemplateRefused) as caught:
        await templates.render("x", "scheduled", session)
    assert str(caught.value) == "template_timeout: x/scheduled.j2: rendering took over 0.3 s and was stopped"
    assert time.monotonic() - started < 3
    assert (await templates.render("linkedin", "scheduled", session)).strip()  # a new worker took over


async def test_workers_contain_a_memory_bomb(
    workers: Callable[..., TemplateWorkers], session: ScheduledSession
) -> None:
    """`~` joins strings without the sandbox's size check: the worker's memory cap stops it, not the pipeline."""
    source = (
        "{% set ns = namespace(s='x' * 100000) %}\n{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}x"
    )
    templates = workers(source, seconds=10, memory_mb=64)
    with pytest.raises(TemplateRefused) as caught:
        await templates.render("x", "scheduled", session)
    assert "MemoryError" in str(caught.value) or "worker died" in str(caught.value)
