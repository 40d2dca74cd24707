"""`impromptu replay FILE.jsonl` as a user runs it, against a real nats-server: new shares once, never twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from pipeline import bus
from pipeline.embedded import EmbeddedNats
from pipeline.messages import Share
from tests.integration.bus_helpers import models_on, subject_counts

pytestmark = pytest.mark.nats

IMPROMPTU = str(Path(sys.executable).parent / "impromptu")


def replay(file: Path, nats_url: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_")}
    env.update(NATS_URL=nats_url, IMPROMPTU_DATA_DIR=str(data_dir), IMPROMPTU_LOG_JSON="true")
    return subprocess.run([IMPROMPTU, "replay", str(file)], env=env, capture_output=True, text=True, timeout=60)


def body(n: int) -> str:
    return json.dumps({"url": f"https://example.com/article/{n}", "by": "@britz", "text": f"read #{n}"})


async def test_replay_publishes_every_share_once_and_a_rerun_publishes_nothing_new(
    tmp_path: Path, nats_server: EmbeddedNats, client: NatsBroker
) -> None:
    file = tmp_path / "shares.jsonl"
    bus_share = Share.from_source(source="x", native_id="1", sharer="@ana", url="https://example.com/from-x")
    file.write_text("\n".join(["# last week's shares", *(body(n) for n in range(4)), "", bus_share.model_dump_json()]))

    first = replay(file, nats_server.url, tmp_path / "data")
    again = replay(file, nats_server.url, tmp_path / "data")

    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"{file}: 5 published, 0 already on the bus, 0 invalid line(s)"
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"{file}: 0 published, 5 already on the bus, 0 invalid line(s)"
    assert (await subject_counts(client))[bus.SHARES.subject] == 5
    shares = await models_on(client, bus.SHARES.subject, Share)
    assert [s.text for s in shares[:4]] == [f"read #{n}" for n in range(4)]
    assert {s.source for s in shares[:4]} == {"replay"}
    assert shares[4] == bus_share


async def test_a_bad_file_reports_every_bad_line_and_exits_1_after_publishing_the_good_ones(
    tmp_path: Path, nats_server: EmbeddedNats, client: NatsBroker
) -> None:
    file = tmp_path / "shares.jsonl"
    file.write_text("\n".join([body(1), "{oops", json.dumps({"by": "@britz"}), body(2), '{"url": 1, "by": 2}']))

    done = replay(file, nats_server.url, tmp_path / "data")

    assert done.returncode == 1
    errors = done.stderr.splitlines()
    assert errors[0].startswith(f"{file}:2: <json>: ")  # the JSON parser's own words follow
    assert errors[1:] == [
        f"{file}:3: url: Field required",
        f"{file}:5: url: Input should be a valid string",
        f"{file}:5: by: Input should be a valid string",
    ]
    assert done.stdout.strip() == f"{file}: 2 published, 0 already on the bus, 3 invalid line(s)"
    assert (await subject_counts(client))[bus.SHARES.subject] == 2


def test_a_file_with_only_bad_lines_needs_no_nats_and_exits_1(tmp_path: Path) -> None:
    file = tmp_path / "shares.jsonl"
    file.write_text("[]\n")

    done = replay(file, "nats://127.0.0.1:1", tmp_path / "data")

    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"{file}:1: <json>: expected a JSON object, got list"]
    assert "Traceback" not in done.stderr


def test_a_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    done = replay(tmp_path / "nowhere.jsonl", "nats://127.0.0.1:1", tmp_path / "data")

    assert done.returncode == 1
    assert done.stderr.strip() == f"error: {tmp_path / 'nowhere.jsonl'}: cannot read: No such file or directory"
