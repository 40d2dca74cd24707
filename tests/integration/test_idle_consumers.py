"""An idle pipeline holds steady: empty fetches of its pull consumers leave nothing behind."""

from __future__ import annotations

import asyncio

import pytest
from faststream.nats import NatsBroker

from pipeline import pull_timeouts

pytestmark = pytest.mark.nats


def _tasks(broker: NatsBroker) -> list[asyncio.Task[object]]:
    return [task for subscriber in broker.subscribers for task in getattr(subscriber, "tasks", [])]


async def test_an_idle_pipeline_keeps_its_consumers_tasks_and_no_dead_ones(pipeline: NatsBroker) -> None:
    assert pull_timeouts.installed()
    await asyncio.sleep(1.5)  # every consumer has fetched and come back empty at least once
    before = len(_tasks(pipeline))

    await asyncio.sleep(6)  # six more empty 1 s fetches on each consumer

    tasks = _tasks(pipeline)
    dead = [task for task in tasks if task.done()]
    # Before: a fetch that timed out as a plain asyncio.TimeoutError killed FastStream's pull loop; its supervisor
    # started another and kept the dead one (exception, traceback, frames): about 90 a minute on an idle worker.
    assert not dead, f"{len(dead)} finished tasks kept, e.g. {dead[0].exception()!r}"
    assert len(tasks) == before
    assert all(not getattr(s, "tasks", None) or len(s.tasks) <= 2 for s in pipeline.subscribers)
