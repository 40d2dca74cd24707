"""The bus is closed: the embedded nats-server as `impromptu run` starts it (`nats_for`) refuses a client without its
credentials, the CLI and the workers join it as their own nkey users (made once, private, kept), the workers cannot
delete what the pipeline keeps, an old data dir keeps its stream; and a recording naming a file outside the import
folder (a server path, a file:// URL, a link out of the folder to a 0600 file) is dead-lettered, nothing kept."""

from __future__ import annotations

import gc
import json
import os
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path

import nats.errors
import nkeys
import pytest
from faststream.nats import NatsBroker
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig

from pipeline import bus
from pipeline.actions.service import Approvals
from pipeline.app import connected, discover, nats_for, new_broker
from pipeline.domain import catalog
from pipeline.domain.approval import advance_by_clock
from pipeline.domain.describe import entry_id_for
from pipeline.domain.live_rules import LiveRules
from pipeline.embedded import BUS_USERS, EmbeddedNats, free_port
from pipeline.errors import ConfigError
from pipeline.messages import DeadLetter, LibraryEntry, Recording, RecordingFile, ScheduledSession, Share
from pipeline.settings import Settings
from tests.integration.bus_helpers import models_on, seed_proposal, wait_until

pytestmark = pytest.mark.nats


@pytest.fixture
def run_settings(tmp_path: Path) -> Settings:
    """What `impromptu run` reads from the environment: no NATS_URL, a data dir, a free embedded port."""
    return Settings(data_dir=tmp_path / "data", embedded_nats_port=free_port())


@pytest.fixture
def embedded(run_settings: Settings) -> Iterator[Settings]:
    """The embedded server exactly as `impromptu run` starts it; yields the workers' settings."""
    with nats_for(run_settings) as live:
        yield live


def _share(name: str) -> Share:
    return Share.from_source(source="cli", native_id=name, sharer="@ana", text=name, url=f"https://example.com/{name}")


async def _refused(url: str, **credentials: str) -> str:
    """Connect with nats-py directly, as any program on the machine could; the server's refusal, or ""."""
    raw = NATS()
    try:
        await raw.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2, **credentials)
    except Exception as error:
        return str(error)
    finally:
        await raw.close()  # a refused connection's socket too
    return ""


async def test_a_client_without_the_credentials_is_refused(
    embedded: Settings, run_settings: Settings, tmp_path: Path
) -> None:
    url = embedded.nats_url or ""
    assert "Authorization Violation" in await _refused(url)  # nothing given: it cannot publish or subscribe
    stranger = tmp_path / "stranger.nk"  # a well-formed key the server does not know
    stranger.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    assert "Authorization Violation" in await _refused(url, nkeys_seed=str(stranger))
    assert await _refused(url, nkeys_seed=str(run_settings.nats_auth_dir / "admin.nk")) == ""

    # `NATS_URL=… impromptu proposals reject … --by <anyone>` from an empty data dir: refused, with the way in
    with pytest.raises(ConfigError, match="Authorization Violation") as refused:
        async with connected(Settings(nats_url=url, data_dir=tmp_path / "empty")):
            pass
    assert "IMPROMPTU_NATS_NKEY_SEED=" in str(refused.value)
    del refused  # its traceback holds the refused client: collected here, not in whichever test runs next
    with warnings.catch_warnings():  # nats-py drops a refused connection's socket unclosed (the CLI exits anyway)
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()

    # The CLI finds the server through data/nats.url and joins as admin, no step of the user's own
    async with connected(run_settings) as cli:
        await bus.publish(cli, bus.SHARES, _share("a"))
        info = await cli.config.connection_state.stream.stream_info(bus.STREAM)
        assert info.state.messages == 1


async def test_the_credentials_are_made_once_private_and_kept(run_settings: Settings) -> None:
    folder = run_settings.nats_auth_dir
    with nats_for(run_settings):
        seeds = {user: (folder / f"{user}.nk").read_bytes() for user in BUS_USERS}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for user, seed in seeds.items():
        assert stat.S_IMODE((folder / f"{user}.nk").stat().st_mode) == 0o600
        assert seed.startswith(b"SU") and seed not in (folder / "nats-server.conf").read_bytes()
    assert stat.S_IMODE((folder / "nats-server.conf").stat().st_mode) == 0o600

    (folder / "admin.nk").chmod(0o644)  # loosened by hand: tightened at the next start
    with nats_for(run_settings) as live:
        async with connected(live):
            pass
        joining = discover(Settings(data_dir=run_settings.data_dir), "pipeline")  # `impromptu run --stages enrich`
        assert joining.nats_url == live.nats_url and joining.nats_nkey_seed == folder / "pipeline.nk"
        worker = new_broker(joining.nats_url or "", joining)
        await worker.connect()
        await worker.stop()
    assert {user: (folder / f"{user}.nk").read_bytes() for user in BUS_USERS} == seeds
    assert stat.S_IMODE((folder / "admin.nk").stat().st_mode) == 0o600


async def test_an_old_data_dir_keeps_its_stream_when_the_server_gets_users(run_settings: Settings) -> None:
    # the store as the code before the users left it: written by an open server
    with EmbeddedNats(run_settings.nats_store_dir, port=run_settings.embedded_nats_port) as old:
        async with connected(run_settings.model_copy(update={"nats_url": old.url})) as before:
            await bus.ensure_stream(before, run_settings)
            await bus.publish(before, bus.SHARES, _share("o"))
    assert not run_settings.nats_auth_dir.exists()

    with nats_for(run_settings):
        async with connected(run_settings) as after:
            info = await after.config.connection_state.stream.stream_info(bus.STREAM)
    assert info.state.messages == 1
    assert (run_settings.nats_auth_dir / "pipeline.nk").exists()


async def test_the_workers_cannot_delete_what_the_pipeline_keeps(embedded: Settings, run_settings: Settings) -> None:
    async with connected(run_settings) as admin:
        admin_js = admin.config.connection_state.stream
        await admin_js.add_stream(StreamConfig(name="SCRATCH", subjects=["scratch.>"]))
        kv = await catalog.library_bucket(admin)  # a bucket the archive keeps (a stream of its own)

        worker = new_broker(embedded.nats_url or "", embedded)
        await worker.connect()
        try:
            raw = worker.config.connection_state.connection
            await bus.publish(worker, bus.SHARES, _share("w"))
            await kv.put("entry.probe", b"{}")  # (by admin) and the worker reads and purges keys as the archive does
            worker_kv = await catalog.library_bucket(worker)
            assert (await worker_kv.get("entry.probe")).value == b"{}"
            await worker_kv.purge("entry.probe")
            for stream in (bus.STREAM, kv._stream, "SCRATCH"):
                with pytest.raises(nats.errors.TimeoutError):  # the server drops a refused request: no answer
                    await raw.request(f"$JS.API.STREAM.DELETE.{stream}", b"", timeout=1)
                assert (await admin_js.stream_info(stream)).config.name == stream  # still there
        finally:
            await worker.stop()
        assert await admin_js.delete_stream("SCRATCH")  # the admin may: the denial is the worker's alone


# --- a recording naming a file outside the import folder -------------------------------------------------------------


async def _ended_session(client: NatsBroker, settings: Settings) -> ScheduledSession:
    """A session held and over, so the archive would keep its recording: only the file's location can stop it."""
    proposal = await seed_proposal(client)
    await Approvals(client, settings, LiveRules.load(settings.rules_file)).approve(proposal.id, by="ana")

    async def scheduled() -> list[ScheduledSession]:
        return await models_on(client, bus.SESSIONS_SCHEDULED.subject, ScheduledSession)

    await wait_until(scheduled, what="the session scheduled")
    (session,) = await scheduled()
    await advance_by_clock(client, session.starts_at)
    await advance_by_clock(client, session.ends_at)
    return session


async def test_a_recording_naming_a_file_outside_the_import_folder_is_dead_lettered_and_nothing_kept(
    pipeline: NatsBroker, client: NatsBroker, settings: Settings, tmp_path: Path
) -> None:
    secret = tmp_path / "outside" / "secret.mp4"  # a private file outside the folder (root's, on the attacked box)
    secret.parent.mkdir()
    secret.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"private" * 1000)
    secret.chmod(0o600)
    settings.import_dir.mkdir(parents=True, exist_ok=True)
    (settings.import_dir / "talk.mp4").symlink_to(secret)
    session = await _ended_session(client, settings)

    expected = {
        str(secret): "server paths are never read",
        secret.as_uri(): "file:// URLs are never read",
        "import:talk.mp4": "leads out of the import folder",
    }
    sent: dict[str, str] = {}
    for location in expected:
        recording = Recording.arrived(
            session, source="cli", files=[RecordingFile(kind="video", location=location, content_type="video/mp4")]
        )
        await bus.publish(client, bus.RECORDINGS, recording)  # a raw PUB, as anyone on an open bus could
        sent[recording.id] = location

    async def dead_letters() -> dict[str, DeadLetter]:
        letters = await models_on(client, bus.dead_letter_subject("archive"), DeadLetter)
        return {json.loads(letter.data)["id"]: letter for letter in letters}

    await wait_until(lambda: _all(dead_letters, sent), what="the three recordings dead-lettered")
    for recording_id, letter in (await dead_letters()).items():
        assert expected[sent[recording_id]] in letter.reason and letter.permanent, letter.reason

    assert await models_on(client, bus.LIBRARY_ENTRIES.subject, LibraryEntry) == []
    kv = await catalog.library_bucket(client)
    assert await catalog.get_record(kv, entry_id_for(session.id)) is None
    js = client.config.connection_state.stream
    kept = [name async for name in _object_streams(js)]
    for name in kept:  # the media bucket, if the archive made it: empty
        assert (await js.stream_info(name)).state.messages == 0
    assert not any(path.is_file() for path in settings.library_dir.rglob("*"))


async def _all(dead_letters, sent: dict[str, str]) -> bool:  # type: ignore[no-untyped-def]
    return set(sent) <= set(await dead_letters())


async def _object_streams(js):  # type: ignore[no-untyped-def]
    for name in await js.streams_info():
        if name.config.name.startswith("OBJ_"):
            yield name.config.name
