"""At-least-once with idempotent effects, retries and dead letters, on a real nats-server.

FastStream's in-memory broker cannot test any of this: its ack, nak and term do nothing.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from faststream.nats import NatsBroker

from pipeline import bus
from pipeline.app import new_broker, start_stages
from pipeline.bus import jetstream
from pipeline.demo import ASSETS, article_server, seed_share
from pipeline.domain.approval import list_records
from pipeline.embedded import EmbeddedNats
from pipeline.errors import PermanentError, RetryableError
from pipeline.messages import DeadLetter, Share, TriggerFired
from pipeline.settings import Settings
from pipeline.stage import StageRouter
from tests.integration.bus_helpers import (
    consumer,
    messages_on,
    models_on,
    subject_counts,
    wait_for_count,
    wait_until,
)

pytestmark = pytest.mark.nats

PROBE = bus.Topic("impromptu.probe", Share)
Handler = Callable[[Share], Awaitable[None]]


@pytest.fixture
async def probe(settings: Settings) -> AsyncIterator[Callable[[Handler], Awaitable[NatsBroker]]]:
    """Run one handler as a stage ("probe") with the production delivery semantics."""
    brokers: list[NatsBroker] = []

    async def start(handler: Handler) -> NatsBroker:
        router = StageRouter("probe", settings)
        router.consume(PROBE)(handler)
        broker = new_broker(settings.nats_url or "")
        broker.include_router(router)
        await start_stages(broker, settings)
        brokers.append(broker)
        return broker

    yield start
    for broker in brokers:
        await broker.stop()


def share(n: int) -> Share:
    return Share.from_source(source="cli", native_id=str(n), sharer="@britz", url=f"https://example.com/{n}")


async def test_transient_failures_are_retried_then_processed_once(probe, client: NatsBroker) -> None:
    calls: list[str] = []
    done: list[str] = []

    async def flaky(message: Share) -> None:
        calls.append(message.id)
        if len(calls) <= 2:
            raise RetryableError("peer is down")
        done.append(message.id)

    await probe(flaky)
    await bus.publish(client, PROBE, share(1))
    await wait_until(lambda: done, what="the third delivery to succeed")
    await asyncio.sleep(0.3)  # room for a wrong extra delivery to show up

    assert calls == ["cli:1"] * 3
    assert done == ["cli:1"]
    info = await consumer(client, "probe")
    assert info.num_ack_pending == 0 and info.num_pending == 0 and info.num_redelivered == 0
    assert bus.dead_letter_subject("probe") not in await subject_counts(client)


async def test_failing_message_goes_to_dead_letters_and_the_stage_keeps_going(
    probe, client: NatsBroker, settings: Settings
) -> None:
    done: list[str] = []

    async def fails_on_first(message: Share) -> None:
        if message.id == "cli:1":
            raise RetryableError("the article server answered 503")
        done.append(message.id)

    await probe(fails_on_first)
    await bus.publish(client, PROBE, share(1))
    await bus.publish(client, PROBE, share(2))
    await wait_for_count(client, bus.dead_letter_subject("probe"), 1)
    await wait_until(lambda: done, what="the good message")

    (dead,) = await models_on(client, bus.dead_letter_subject("probe"), DeadLetter)
    assert dead.reason == "the article server answered 503"
    assert dead.deliveries == settings.delivery.max_deliveries
    assert dead.permanent is False and dead.stage == "probe" and dead.subject == PROBE.subject
    replayable = Share.model_validate_json(dead.data)  # the original body, ready to replay
    assert (replayable.id, replayable.url) == ("cli:1", "https://example.com/1")
    assert dead.correlation_id == share(1).correlation_id
    assert done == ["cli:2"]
    info = await consumer(client, "probe")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_permanent_error_is_dead_lettered_without_retrying(probe, client: NatsBroker) -> None:
    calls: list[str] = []

    async def refuses(message: Share) -> None:
        calls.append(message.id)
        raise PermanentError("blocked_address: 10.0.0.1 is not public")

    await probe(refuses)
    await bus.publish(client, PROBE, share(1))
    await wait_for_count(client, bus.dead_letter_subject("probe"), 1)
    await asyncio.sleep(0.3)

    (dead,) = await models_on(client, bus.dead_letter_subject("probe"), DeadLetter)
    assert calls == ["cli:1"]
    assert dead.permanent is True and dead.deliveries == 1
    assert dead.reason.startswith("blocked_address")


async def test_malformed_messages_on_a_stage_subject_are_dead_lettered_with_the_reason(
    pipeline: NatsBroker, client: NatsBroker
) -> None:
    js = jetstream(client)
    await js.publish(bus.SHARES.subject, b'{"id": "x:1", "sharer": "@britz"}', headers={"Nats-Msg-Id": "bad-1"})
    await js.publish(bus.SHARES.subject, b"\xff\xfe not json at all", headers={"Nats-Msg-Id": "bad-2"})
    await js.publish(bus.SHARES.subject, b'{"id": "x:3", "url":', headers={"Nats-Msg-Id": "bad-3"})
    await js.publish(bus.SHARES.subject, b"", headers={"Nats-Msg-Id": "bad-4"})
    good = seed_share("https://www.linkedin.com/pulse/leadership-training")
    await bus.publish(client, bus.SHARES, good)

    await wait_for_count(client, bus.dead_letter_subject("trigger"), 4)
    await wait_for_count(client, bus.TRIGGERS_FIRED.subject, 1)

    # the trigger stage judges 16 shares at once: its dead letters come in any order, so each is taken by its id
    letters = {
        d.headers["Nats-Msg-Id"]: d for d in await models_on(client, bus.dead_letter_subject("trigger"), DeadLetter)
    }
    first, second, third, fourth = (letters[f"bad-{n}"] for n in range(1, 5))
    assert first.permanent and first.deliveries == 1
    assert "invalid" in first.reason and "url" in first.reason and "correlation_id" in first.reason
    assert first.data == '{"id": "x:1", "sharer": "@britz"}'
    assert second.permanent and "\\xff" in second.data
    # not pydantic's "Input should be a valid dictionary or instance of Share": what is wrong with the body
    assert second.reason == "body is not UTF-8: invalid start byte (byte 0xff at position 0)"
    assert third.permanent and third.reason == "body is not JSON: Expecting value at line 1 column 21"
    assert fourth.permanent and fourth.reason == "body is not JSON: Expecting value at line 1 column 1"
    (fired,) = await models_on(client, bus.TRIGGERS_FIRED.subject, TriggerFired)
    assert fired.share == good


async def test_a_republished_share_creates_nothing_new(pipeline: NatsBroker, client: NatsBroker) -> None:
    with article_server((ASSETS / "bersin-article.html").read_bytes()) as url:
        original = seed_share(url)
        first = await bus.publish(client, bus.SHARES, original)
        again = await bus.publish(client, bus.SHARES, original)  # a source re-polled the same tweet
        assert not first.duplicate and again.duplicate

        await wait_for_count(client, bus.PROPOSALS_CREATED.subject, 1)
        # Past JetStream's duplicate window the same share arrives as a new message: the stages'
        # own ids and idempotent effects must still create nothing new.
        js = jetstream(client)
        await js.publish(bus.SHARES.subject, original.model_dump_json().encode(), headers={"Nats-Msg-Id": "late-copy"})
        await wait_for_count(client, bus.SHARES.subject, 2)
        await wait_until(lambda: _settled(client, "trigger"), what="the trigger stage to settle")
        (enriched,) = await messages_on(client, bus.CONTENT_ENRICHED.subject)
        await js.publish(bus.CONTENT_ENRICHED.subject, enriched, headers={"Nats-Msg-Id": "late-enriched-copy"})
        await wait_for_count(client, bus.CONTENT_ENRICHED.subject, 2)
        await wait_until(lambda: _settled(client, "actions-propose"), what="the actions stage to settle")

    counts = await subject_counts(client)
    assert counts[bus.SHARES.subject] == 2
    assert counts[bus.TRIGGERS_FIRED.subject] == 1  # same TriggerFired id: JetStream dropped the copy
    assert counts[bus.PROPOSALS_CREATED.subject] == 1
    assert len(await list_records(client)) == 1


async def _settled(client: NatsBroker, durable: str) -> bool:
    info = await consumer(client, durable)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_the_dead_letter_keeps_headers_for_replay(probe, client: NatsBroker) -> None:
    async def refuses(message: Share) -> None:
        raise PermanentError("nope")

    await probe(refuses)
    await bus.publish(client, PROBE, share(7))
    await wait_for_count(client, bus.dead_letter_subject("probe"), 1)
    (raw,) = await messages_on(client, bus.dead_letter_subject("probe"))
    dead = DeadLetter.model_validate_json(raw)
    assert dead.headers["Nats-Msg-Id"] == "cli:7"
    assert dead.stream_sequence is not None


async def test_workers_sharing_a_durable_consumer_split_the_work(probe, client: NatsBroker) -> None:
    handled: dict[str, list[str]] = {"a": [], "b": []}

    def worker(name: str) -> Handler:
        async def handle(message: Share) -> None:
            await asyncio.sleep(0.01)
            handled[name].append(message.id)

        return handle

    await probe(worker("a"))
    await probe(worker("b"))
    for n in range(60):
        await bus.publish(client, PROBE, share(n))
    await wait_until(lambda: len(handled["a"]) + len(handled["b"]) >= 60, what="all 60 messages")
    await asyncio.sleep(0.3)

    everything = handled["a"] + handled["b"]
    assert sorted(everything) == sorted(f"cli:{n}" for n in range(60))  # each exactly once
    assert handled["a"] and handled["b"]  # both workers took a share of the work


HANGING_WORKER = """
import asyncio, sys
from pipeline.app import new_broker, start_stages
from pipeline.bus import Topic
from pipeline.settings import Settings
from pipeline.stage import StageRouter
from pipeline.messages import Share

async def main() -> None:
    settings = Settings(nats_url=sys.argv[1], ack_wait_seconds=1.0)
    router = StageRouter("probe", settings)

    @router.consume(Topic("impromptu.probe", Share))
    async def hangs(message: Share) -> None:
        print("received", message.id, flush=True)
        await asyncio.Event().wait()

    broker = new_broker(settings.nats_url)
    broker.include_router(router)
    await start_stages(broker, settings)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_message_held_by_a_killed_worker_is_redelivered_to_another(
    probe, client: NatsBroker, settings: Settings
) -> None:
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HANGING_WORKER, settings.nats_url or "", stdout=asyncio.subprocess.PIPE
    )
    try:
        await bus.publish(client, PROBE, share(1))
        line = await asyncio.wait_for(worker.stdout.readline(), 20)  # type: ignore[union-attr]
        assert line.decode().split() == ["received", "cli:1"]
    finally:
        worker.kill()  # SIGKILL mid-message: no ack, no goodbye
        await worker.wait()

    handled: list[str] = []

    async def works(message: Share) -> None:
        handled.append(message.id)

    settings.ack_wait_seconds = 1.0
    await probe(works)
    await wait_until(lambda: handled, timeout=10, what="redelivery after ack_wait")
    await asyncio.sleep(0.3)
    assert handled == ["cli:1"]
    info = await consumer(client, "probe")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_publish_waits_out_a_server_restart_and_stores_the_message_once(
    client: NatsBroker, nats_server: EmbeddedNats
) -> None:
    """While the stream does not answer (a restart here; a leader election on a cluster) bus.publish tries again
    under the same Nats-Msg-Id, for up to PUBLISH_PATIENCE_SECONDS."""
    await bus.publish(client, bus.SHARES, share(0))  # the stream exists
    nats_server.stop()
    publishing = asyncio.create_task(bus.publish(client, bus.SHARES, share(1)))
    await asyncio.sleep(1.0)
    assert not publishing.done()
    nats_server.start()
    ack = await asyncio.wait_for(publishing, bus.PUBLISH_PATIENCE_SECONDS)
    assert (ack.stream, ack.seq) == (bus.STREAM, 2)  # often `duplicate`: a first try stored it, its answer was lost
    assert (await subject_counts(client))[bus.SHARES.subject] == 2  # share(1) stored once, however many tries it took
