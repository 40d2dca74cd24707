"""The search index follows the library bucket on a real nats-server: rebuilt at start, changes made by another
connection (another worker) visible through wait_for, two indexes (two machines) agree, a server restart survived,
and no consumer left behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from faststream.nats import NatsBroker
from nats.js.kv import KeyValue

from pipeline import stores
from pipeline.app import connected
from pipeline.archive.search import LibraryIndex, SearchQuery
from pipeline.domain import catalog
from pipeline.domain.catalog import ArticleItem, Cue, SearchText
from pipeline.embedded import EmbeddedNats
from pipeline.settings import Settings
from tests.library_corpus import article, generate, record

pytestmark = pytest.mark.nats

STREAM = "KV_" + stores.LIBRARY


async def last_revision(kv: KeyValue) -> int:
    """The bucket's newest revision: what a change just made (a delete marker too) was written at."""
    info = await kv._js.stream_info(STREAM)
    return info.state.last_seq


async def consumers(kv: KeyValue) -> int:
    info = await kv._js.stream_info(STREAM)
    return info.state.consumer_count


async def found(index: LibraryIndex, q: str, **options: object) -> list[str]:
    page = await index.search(SearchQuery(q=q, per_page=100, **options))  # type: ignore[arg-type]
    return sorted(hit.item_id for hit in page.hits)


@pytest.fixture
async def other_worker(settings: Settings) -> AsyncIterator[NatsBroker]:
    """A second connection: another worker, on another machine, writing to the same bucket."""
    async with connected(settings) as broker:
        yield broker


async def seed(kv: KeyValue, count: int = 30) -> None:
    corpus = generate(count, transcript_words=(40, 80))
    for item in corpus.records:
        await catalog.keep(kv, item.entry, by="archive")
    for item in corpus.articles:
        await catalog.update(kv, catalog.article_key(item.article_id), ArticleItem, lambda _, item=item: item)
    for item_id, text in corpus.texts.items():
        await catalog.put_text(kv, item_id, text)
    # an older revision of one text, superseded: the rebuild must index the newest only
    await catalog.put_text(kv, "rec-00001", SearchText(cues=[Cue(start=1.0, text="an outdated wayfinding line")]))
    await catalog.put_text(kv, "rec-00001", corpus.texts["rec-00001"])


async def test_rebuilds_at_start_and_follows_every_change_another_worker_makes(
    client: NatsBroker, other_worker: NatsBroker
) -> None:
    kv = await catalog.library_bucket(client)
    await seed(kv)
    before = await consumers(kv)
    index = LibraryIndex()
    await index.start(kv)
    try:
        assert (await index.search(SearchQuery(include_internal=True, include_unlisted=True))).total == 30 + 10
        assert await found(index, "wayfinding") == []
        assert await consumers(kv) == before + 1

        theirs = await catalog.library_bucket(other_worker)
        new = record("n-1", title="Wayfinding in new teams", tags=("Café Zürich",))
        await catalog.keep(theirs, new.entry, by="archive")
        assert await index.wait_for(catalog.entry_key("n-1"), await last_revision(theirs))
        assert await found(index, "wayfinding") == ["n-1"]
        assert await found(index, "zurich", kinds=("recording",)) >= ["n-1"]

        await catalog.put_text(
            theirs, "n-1", SearchText(cues=[Cue(start=0, text="hello"), Cue(start=95.5, text="onboarding")])
        )
        assert await index.wait_for(catalog.text_key("n-1"), await last_revision(theirs))
        hit = (await index.search(SearchQuery(q="onboarding"))).hits[0]
        assert (hit.item_id, hit.moment) == ("n-1", 95.5)

        await catalog.edit(theirs, "n-1", by="facilitator@example.com", tagline="Kaleidoscope of habits")
        assert await index.wait_for(catalog.entry_key("n-1"), await last_revision(theirs))
        assert await found(index, "kaleidoscope") == ["n-1"]
        assert await found(index, "onboarding") == ["n-1"]  # its transcript stayed with it

        await catalog.set_published(theirs, "n-1", False, by="facilitator@example.com", reason="speaker asked")
        assert await index.wait_for(catalog.entry_key("n-1"), await last_revision(theirs))
        assert await found(index, "kaleidoscope") == []
        assert await found(index, "kaleidoscope", include_unlisted=True) == ["n-1"]

        await catalog.forget(theirs, "n-1")
        assert await index.wait_for(catalog.text_key("n-1"), await last_revision(theirs))
        assert await found(index, "kaleidoscope", include_unlisted=True) == []
        assert await found(index, "onboarding", include_unlisted=True) == []

        listed = article("a-new", title="Scaffolding for newcomers")
        await catalog.update(theirs, catalog.article_key("a-new"), ArticleItem, lambda _: listed)
        assert await index.wait_for(catalog.article_key("a-new"), await last_revision(theirs))
        assert await found(index, "scaffolding") == ["a-new"]
        await theirs.purge(catalog.article_key("a-new"))  # a purge (KV-Operation PURGE) removes it too
        assert await index.wait_for(catalog.article_key("a-new"), await last_revision(theirs))
        assert await found(index, "scaffolding") == []
        assert index.updated_at() is not None
    finally:
        await index.stop()
    assert await consumers(kv) == before


async def test_wait_for_a_revision_not_yet_written_times_out(client: NatsBroker) -> None:
    kv = await catalog.library_bucket(client)
    index = LibraryIndex()
    await index.start(kv)
    try:
        assert await index.wait_for(catalog.entry_key("x"), await last_revision(kv))  # already there: at once
        assert not await index.wait_for(catalog.entry_key("x"), await last_revision(kv) + 5, timeout=0.3)
    finally:
        await index.stop()


async def test_two_indexes_on_two_connections_agree(client: NatsBroker, other_worker: NatsBroker) -> None:
    kv = await catalog.library_bucket(client)
    await seed(kv, 24)
    first, second = LibraryIndex(), LibraryIndex(storage="file")
    await first.start(kv)
    await second.start(await catalog.library_bucket(other_worker))
    try:
        await catalog.set_published(kv, "rec-00003", False, by="facilitator@example.com")
        await catalog.forget(kv, "rec-00004")
        revision = await last_revision(kv)
        assert await first.wait_for(catalog.entry_key("rec-00003"), revision)
        assert await second.wait_for(catalog.entry_key("rec-00003"), revision)
        everything = {"include_unlisted": True, "include_internal": True}
        for query in (
            SearchQuery(per_page=100),
            SearchQuery(q="team", per_page=100),
            SearchQuery(q="der", sort="newest"),
            SearchQuery(filters={"tag": ["cafe-zurich"]}, **everything),  # type: ignore[arg-type]
        ):
            one, other = await first.search(query), await second.search(query)
            assert [(h.item_id, round(h.score, 6), h.moment) for h in one.hits] == [
                (h.item_id, round(h.score, 6), h.moment) for h in other.hits
            ]
            assert one.facets == other.facets and one.total == other.total
        assert "rec-00004" not in {h.item_id for h in (await first.search(SearchQuery(per_page=100))).hits}
        assert second._path is not None and second._path.exists()
        path = second._path
    finally:
        await first.stop()
        await second.stop()
    assert not path.exists()
    assert await consumers(kv) == 0


async def test_keeps_following_after_the_server_restarts(
    client: NatsBroker, nats_server: EmbeddedNats, settings: Settings
) -> None:
    kv = await catalog.library_bucket(client)
    await seed(kv, 8)
    index = LibraryIndex()
    await index.start(kv)
    try:
        nats_server.stop()
        await asyncio.sleep(0.5)
        nats_server.start()
        new = record("after-restart", title="Wayfinding after a restart")
        for _ in range(100):  # the client reconnects within a few seconds
            try:
                await catalog.keep(kv, new.entry, by="archive")
                break
            except Exception:
                await asyncio.sleep(0.2)
        assert await index.wait_for(catalog.entry_key("after-restart"), await last_revision(kv), timeout=20)
        assert await found(index, "wayfinding") == ["after-restart"]
        assert (await index.search(SearchQuery(include_internal=True, include_unlisted=True))).total == 8 + 3 + 1
    finally:
        await index.stop()
    for _ in range(50):  # the consumer the old server had died with it; the re-created one is deleted by stop
        if await consumers(kv) == 0:
            break
        await asyncio.sleep(0.2)
    assert await consumers(kv) == 0
