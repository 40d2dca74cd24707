"""Hot reload: a valid edit takes effect, an invalid one is refused with file:line errors and the last good
rules stay in force."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from structlog.testing import capture_logs

from pipeline.domain.live_rules import LiveRules

GOOD = "people:\n  - {name: A, x: a}\ntopics:\n  t: [tea]\nrules:\n  - name: r\n    when: {topics_any: [t]}\n"


def write(path: Path, text: str, bump: int) -> None:
    path.write_text(text, encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump * 1_000_000_000))  # coarse file-system clocks


def test_a_valid_edit_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, GOOD, 0)
    live = LiveRules.load(path)
    assert not live.refresh()  # unchanged
    write(path, GOOD.replace("{name: A, x: a}", "{name: A, x: a}\n  - {name: B, x: b}"), 1)
    with capture_logs() as logs:
        assert live.refresh()
    assert [p.name for p in live.rules.people] == ["A", "B"]
    assert ("x", "b") in live.known.people
    assert logs[0]["event"] == "rules.reloaded" and logs[0]["people"] == 2


def test_an_invalid_edit_is_refused_and_the_last_good_rules_stay(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, GOOD, 0)
    live = LiveRules.load(path)
    before = live.known
    write(path, GOOD.replace("x: a}", "x: a, trust: 2}"), 1)
    with capture_logs() as logs:
        assert not live.refresh()
        assert not live.refresh()  # refused once, not logged again every second
    assert live.known is before
    (refused,) = logs
    assert refused["event"] == "rules.refused" and refused["kept"] == "last good rules"
    assert refused["errors"] == [f"{path}:2:28: people.0.trust: Input should be less than or equal to 1"]


def test_touching_without_changing_reloads_nothing(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, GOOD, 0)
    live = LiveRules.load(path)
    write(path, GOOD, 1)
    assert not live.refresh()


def test_a_file_briefly_missing_during_a_replace_keeps_the_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, GOOD, 0)
    live = LiveRules.load(path)
    path.unlink()
    assert not live.refresh()
    assert live.rules.people[0].name == "A"


async def test_watch_reloads_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, GOOD, 0)
    live = LiveRules.load(path)
    task = asyncio.create_task(live.watch(every=0.01))
    try:
        write(path, GOOD.replace("[tea]", "[coffee]"), 1)
        for _ in range(200):
            if live.rules.topics["t"].keywords == ["coffee"]:
                break
            await asyncio.sleep(0.01)
        assert live.rules.topics["t"].keywords == ["coffee"]
    finally:
        task.cancel()
