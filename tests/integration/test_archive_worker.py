"""An archive worker (`impromptu run --stages archive`) killed with SIGKILL in the middle of a 200 MB recording: the
recording comes back to another worker, which keeps it once, whole and checked, leaves nothing of the killed upload
behind, and streams it with its RSS well under 300 MB."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from pipeline import bus
from pipeline.archive.media import media_store
from pipeline.domain import catalog
from pipeline.domain.describe import entry_id_for
from pipeline.embedded import EmbeddedNats
from pipeline.messages import LibraryEntry, Recording, RecordingFile, utc_now
from pipeline.settings import Settings
from tests.integration.bus_helpers import models_on, wait_until
from tests.unit.conftest import make_session

pytestmark = [pytest.mark.nats, pytest.mark.media_size]

IMPROMPTU = str(Path(sys.executable).parent / "impromptu")
RECORDING_MB = 200
RSS_LIMIT_MB = 300


def _write_recording(path: Path) -> str:
    """RECORDING_MB of bytes no compression or dedup could shrink; returns their SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(RECORDING_MB):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def _worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_") and k != "NATS_URL"}
    env.update(
        NATS_URL=settings.nats_url or "",
        IMPROMPTU_DATA_DIR=str(settings.data_dir),
        IMPROMPTU_ACK_WAIT_SECONDS="2",
        IMPROMPTU_LOG_JSON="true",
        IMPROMPTU_SOURCES_ENABLED="false",
    )
    with log.open("ab") as out:
        return subprocess.Popen([IMPROMPTU, "run", "--stages", "archive"], env=env, stdout=out, stderr=out)


def _peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


async def test_a_worker_killed_mid_upload_leaves_one_whole_entry_and_no_leftovers(
    nats_server: EmbeddedNats, settings: Settings, client: NatsBroker, tmp_path: Path
) -> None:
    session = make_session(now=utc_now() - timedelta(hours=2))  # held an hour ago, without a proposal on the bus
    sha256 = _write_recording(settings.import_dir / "big.mp4")
    recording = Recording.arrived(session, source="cli", files=[RecordingFile(kind="video", location="import:big.mp4")])
    js = bus.jetstream(client)
    first = _worker(settings, tmp_path / "first.log")
    second: subprocess.Popen[bytes] | None = None
    try:
        await bus.publish(client, bus.RECORDINGS, recording)

        async def uploading() -> bool:
            try:
                info = await js.stream_info(f"OBJ_{settings.media_bucket}")
            except Exception:
                return False
            return info.state.bytes > 40 * 1024 * 1024

        try:
            await wait_until(uploading, timeout=60, what="the first worker's upload under way")
        except AssertionError as error:  # say what the worker was doing, so a slow or failed start can be told apart
            log_tail = (tmp_path / "first.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"{error}; worker exit code {first.poll()}; its log ends:\n{log_tail}") from None
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert not await models_on(client, bus.LIBRARY_ENTRIES.subject, LibraryEntry)  # killed before it could finish

        second = _worker(settings, tmp_path / "second.log")

        async def kept() -> bool:
            return bool(await models_on(client, bus.LIBRARY_ENTRIES.subject, LibraryEntry))

        await wait_until(kept, timeout=90, what="the recording kept by the second worker")
        peak = _peak_rss_mb(second.pid)
        time.sleep(0.5)
        (entry,) = await models_on(client, bus.LIBRARY_ENTRIES.subject, LibraryEntry)
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.send_signal(signal.SIGINT)
                try:
                    worker.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    worker.kill()

    assert entry.entry_id == entry_id_for(session.id)
    video = entry.file("video")
    assert video is not None and video.sha256 == sha256 and video.size == RECORDING_MB * 1024 * 1024
    record = await catalog.get_record(await catalog.library_bucket(client), entry.entry_id)
    assert record is not None and [change.what for change in record.history] == ["kept"]

    store = await media_store(settings, client)
    try:
        stored = await store.stat(video.key)
        assert stored is not None and stored.sha256 == sha256
    finally:
        await store.close()
    # nothing of the killed upload is left: the bucket holds one object's bytes (and its small index and meta)
    info = await js.stream_info(f"OBJ_{settings.media_bucket}")
    assert info.state.bytes < video.size * 1.02, (info.state.bytes, video.size)
    assert peak < RSS_LIMIT_MB, f"the worker's peak RSS was {peak:.0f} MB streaming {RECORDING_MB} MB"
