"""`impromptu library`: list, search (no match says so, exit 1), show, edit, unpublish, publish and delete, as a
person runs them against the running pipeline's bus."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from pipeline.archive.media import media_store
from pipeline.domain import catalog
from pipeline.domain.catalog import SearchText
from pipeline.messages import KeptFile
from pipeline.settings import Settings
from tests.library_corpus import cues, record

pytestmark = pytest.mark.nats

IMPROMPTU = str(Path(sys.executable).parent / "impromptu")


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_") and k != "NATS_URL"}
    env.update(NATS_URL=settings.nats_url or "", IMPROMPTU_DATA_DIR=str(settings.data_dir))
    env["IMPROMPTU_FACILITATOR_LOGINS"] = '{"ana": {}}'  # --by names a login
    return subprocess.run([IMPROMPTU, "library", *args], env=env, capture_output=True, text=True, timeout=60)


async def _library(client: NatsBroker, settings: Settings) -> None:
    kv = await catalog.library_bucket(client)
    store = await media_store(settings, client)
    try:

        async def one(data: bytes) -> None:
            stored = await store.put("geneva/video.mp4", _chunks(data), content_type="video/mp4", max_bytes=10**6)
            video = KeptFile(
                kind="video", store="nats", key=stored.key, content_type="video/mp4", size=stored.size,
                sha256=stored.sha256, filename="geneva.mp4",
            )  # fmt: skip
            geneva = record(
                "entry-geneva",
                title="Leadership in Genève",
                tagline="What managers learned by practice",
                tags=("Café Zürich", "Leadership"),
            )
            geneva = geneva.model_copy(update={"entry": geneva.entry.model_copy(update={"files": [video]})})
            await kv.put(catalog.entry_key("entry-geneva"), geneva.model_dump_json().encode())
            spoken = SearchText(cues=cues("we talked about scaffolding around every course".split()))
            await catalog.put_text(kv, "entry-geneva", spoken)

        await one(b"v" * 5000)
        other = record("entry-other", title="Onboarding by video", tags=("Onboarding",))
        await kv.put(catalog.entry_key("entry-other"), other.model_dump_json().encode())
    finally:
        await store.close()


async def _chunks(data: bytes):  # type: ignore[no-untyped-def]
    yield data


async def test_list_search_show_edit_unpublish_publish_delete(client: NatsBroker, settings: Settings) -> None:
    await _library(client, settings)

    listed = _cli(settings, "list")
    assert listed.returncode == 0, listed.stderr
    assert "entry-geneva" in listed.stdout and "entry-other" in listed.stdout and "2 in all" in listed.stdout

    found = _cli(settings, "search", "Geneve")  # accents folded
    assert found.returncode == 0 and "entry-geneva" in found.stdout and "entry-other" not in found.stdout
    spoken = _cli(settings, "search", "scaffolding")  # a word said in the session: its moment
    assert spoken.returncode == 0 and "entry-geneva" in spoken.stdout and " at 0:00" in spoken.stdout
    tagged = _cli(settings, "search", "leadership", "--tag", "cafe zurich")
    assert tagged.returncode == 0 and "entry-geneva" in tagged.stdout

    nothing = _cli(settings, "search", "provenance")
    assert nothing.returncode == 1 and "nothing matches 'provenance'" in nothing.stderr and not nothing.stdout

    shown = _cli(settings, "show", "entry-geneva")
    assert shown.returncode == 0 and "Café Zürich, Leadership" in shown.stdout and "video:" in shown.stdout

    edited = _cli(settings, "edit", "entry-geneva", "--by", "ana", "--tags", "Genève, leadership , Leadership")
    assert edited.returncode == 0 and "tags changed by ana" in edited.stdout
    kv = await catalog.library_bucket(client)
    kept = await catalog.get_record(kv, "entry-geneva")
    assert kept is not None and kept.entry.tags == ["Genève", "leadership"]
    assert kept.history[-1].changes["tags"].before == "Café Zürich, Leadership"

    assert _cli(settings, "unpublish", "entry-geneva", "--by", "ana", "--reason", "the speaker asked").returncode == 0
    hidden = _cli(settings, "search", "Geneve")
    assert hidden.returncode == 1  # unpublished: gone from search (a facilitator's `list --all` still shows it)
    assert "[unpublished]" in _cli(settings, "list", "--all").stdout
    assert _cli(settings, "publish", "entry-geneva", "--by", "ana").returncode == 0
    assert _cli(settings, "search", "Geneve").returncode == 0

    refused = _cli(settings, "delete", "entry-geneva", "--by", "ana")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    deleted = _cli(settings, "delete", "entry-geneva", "--by", "ana", "--yes")
    assert deleted.returncode == 0 and "1 file(s)" in deleted.stdout
    assert await catalog.get_record(kv, "entry-geneva") is None
    store = await media_store(settings, client)
    try:
        assert await store.stat("geneva/video.mp4") is None  # its media left the store
    finally:
        await store.close()
    missing = _cli(settings, "show", "entry-geneva")
    assert missing.returncode == 1 and "no library entry 'entry-geneva'" in missing.stderr
    assert "Traceback" not in missing.stderr
