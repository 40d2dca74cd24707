"""A page the enrich stage gave up on can be tried again: a new share of the link re-opens it after a transient
failure, and an operator's `impromptu pages retry URL` after any failure; each once, under a new trigger id.
Against the whole pipeline on a real nats-server, with a local site that fails, then recovers."""

from __future__ import annotations

import asyncio
import http.server
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from pipeline import bus, stores
from pipeline.actions.service import Approvals
from pipeline.app import create_broker, start_stages
from pipeline.demo import ASSETS, loopback_http_server
from pipeline.domain.canonical import canonical_url, link_key
from pipeline.domain.live_rules import LiveRules
from pipeline.domain.trigger_state import TriggerState, UnreadPage
from pipeline.messages import EnrichedContent, EnrichmentFailed, SessionProposal, Share, TriggerFired, utc_now
from pipeline.ops.trace import find_journey, render
from pipeline.settings import Settings
from pipeline.triggers.retry import RetryRefused, retry_page
from pipeline.web.server import create_web_app
from tests.integration.bus_helpers import jetstream, models_on, subject_counts, wait_drained, wait_for_count, wait_until
from tests.integration.test_approval_web import csrf_of
from tests.integration.test_ops_web import LOGINS as OPS_LOGINS
from tests.integration.test_ops_web import logged_in

pytestmark = pytest.mark.nats

ARTICLE = (ASSETS / "bersin-article.html").read_bytes()
IMPROMPTU = str(Path(sys.executable).parent / "impromptu")


class FlakySite:
    """/slow answers 503 and /gone 404 while `broken`; then both serve the seed article. Counts requests."""

    def __init__(self) -> None:
        self.broken = True
        self.hits = 0

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                site.hits += 1
                failing = (503, b"busy") if self.path.startswith("/slow") else (404, b"no")
                status, body = failing if site.broken else (200, ARTICLE)
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def site() -> Iterator[tuple[FlakySite, str]]:
    served = FlakySite()
    with loopback_http_server(served.handler()) as base:
        yield served, base


@pytest.fixture
async def stages(settings: Settings) -> AsyncIterator[NatsBroker]:
    broker = create_broker(settings)
    await start_stages(broker, settings)
    yield broker
    await broker.stop()


def share_of(url: str, n: str, sharer: str = "@britz") -> Share:
    text = "Josh Bersin with data on why eLearning isn't working for leadership and soft skills training"
    return Share.from_source(source="x", native_id=n, sharer=sharer, text=text, url=url)


async def episode_of(client: NatsBroker, url: str):  # type: ignore[no-untyped-def]
    state = TriggerState(await stores.bucket(client, stores.TRIGGERS))
    return (await state.episode(link_key(canonical_url(url))))[0]


async def failed_once(client: NatsBroker, url: str) -> TriggerFired:
    """The share fires, its page keeps failing, the share ends as content.failed and the episode says so."""
    await bus.publish(client, bus.SHARES, share_of(url, "1"))
    await wait_for_count(client, bus.CONTENT_FAILED.subject, 1)

    async def marked() -> bool:
        episode = await episode_of(client, url)
        return episode is not None and episode.ended_unread

    await wait_until(marked, what="the episode marked unread")
    (trigger,) = await models_on(client, bus.TRIGGERS_FIRED.subject, TriggerFired)
    return trigger


async def test_a_new_share_after_a_slow_server_reopens_the_link_once(
    stages: NatsBroker, client: NatsBroker, site: tuple[FlakySite, str], settings: Settings
) -> None:
    served, base = site
    url = f"{base}/slow/article"
    first = await failed_once(client, url)
    assert first.id.endswith(".1")
    (failure,) = await models_on(client, bus.CONTENT_FAILED.subject, EnrichmentFailed)
    assert failure.retryable and failure.reason == "http_503"

    # the share itself redelivered (a new Nats-Msg-Id, the same share): not a new share, nothing re-opens
    js = jetstream(client)
    await js.publish(
        bus.SHARES.subject, share_of(url, "1").model_dump_json().encode(), headers={"Nats-Msg-Id": "again-1"}
    )
    await wait_drained(client, "trigger")
    assert (await subject_counts(client))[bus.TRIGGERS_FIRED.subject] == 1

    served.broken = False
    await bus.publish(client, bus.SHARES, share_of(url, "2"))  # the same person posts the link again, later
    await wait_for_count(client, bus.PROPOSALS_CREATED.subject, 1)
    triggers = await models_on(client, bus.TRIGGERS_FIRED.subject, TriggerFired)
    assert [t.id for t in triggers] == [first.id, first.id.removesuffix(".1") + ".2"]
    (content,) = await models_on(client, bus.CONTENT_ENRICHED.subject, EnrichedContent)
    (proposal,) = await models_on(client, bus.PROPOSALS_CREATED.subject, SessionProposal)
    assert content.trigger.id == triggers[1].id and proposal.content.trigger.id == triggers[1].id
    episode = await episode_of(client, url)
    assert episode.episode == 2 and episode.reopened.failed_trigger_id == first.id
    assert episode.reopened.by == "share x:2" and episode.reopened.reason == "http_503"

    # the first trigger handled again after the re-opening (a stale redelivery): skipped, not a second proposal;
    # and its failure recorded again changes nothing
    served.broken = True
    await js.publish(
        bus.TRIGGERS_FIRED.subject, first.model_dump_json().encode(), headers={"Nats-Msg-Id": "again-fired-1"}
    )
    await wait_drained(client, "enrich")
    key = link_key(canonical_url(url))
    state = TriggerState(await stores.bucket(client, stores.TRIGGERS))
    unread = UnreadPage(trigger_id=first.id, reason="http_503", retryable=True, at=utc_now())
    assert await state.mark_unread(key, unread) is False
    assert (await episode_of(client, url)).episode == 2 and not (await episode_of(client, url)).ended_unread
    await bus.publish(client, bus.SHARES, share_of(url, "3"))
    await wait_drained(client, "trigger")
    await wait_drained(client, "actions-propose")
    counts = await subject_counts(client)
    assert {t.id for t in await models_on(client, bus.TRIGGERS_FIRED.subject, TriggerFired)} == {t.id for t in triggers}
    assert (
        counts[bus.CONTENT_ENRICHED.subject]
        == counts[bus.CONTENT_FAILED.subject]
        == counts[bus.PROPOSALS_CREATED.subject]
        == 1
    )
    assert not any(subject.startswith(bus.DEAD_LETTERS) for subject in counts)
    assert served.hits == settings.delivery.max_deliveries + 1  # three tries while slow, one read when it was not


async def test_a_refused_page_is_not_reopened_by_a_share_but_an_operator_retries_it_once(
    stages: NatsBroker, client: NatsBroker, site: tuple[FlakySite, str], settings: Settings
) -> None:
    served, base = site
    url = f"{base}/gone/article"
    first = await failed_once(client, url)
    (failure,) = await models_on(client, bus.CONTENT_FAILED.subject, EnrichmentFailed)
    assert failure.reason == "http_404" and not failure.retryable  # cached in impromptu-pages: not fetched again
    said = render(await find_journey(bus.jetstream(client), first.share.id))
    assert f"the rule needs the article; to read it again: `impromptu pages retry {failure.url} --by NAME`" in said

    await bus.publish(client, bus.SHARES, share_of(url, "2"))  # a refusal stays one: a share does not re-open it
    await wait_drained(client, "trigger")
    assert (await subject_counts(client))[bus.TRIGGERS_FIRED.subject] == 1

    served.broken = False  # the site fixed its link; the operator asks for the page again, twice at once
    hits = served.hits
    done = await asyncio.gather(retry_page(client, url, by="olga"), retry_page(client, url, by="ben"))
    assert sorted(d.again for d in done) == [False, True]
    assert len({d.trigger.id for d in done}) == 1 and done[0].failed_trigger_id == first.id
    await wait_for_count(client, bus.PROPOSALS_CREATED.subject, 1)
    assert served.hits == hits + 1  # the cached refusal was forgotten: fetched once more
    retried = (await models_on(client, bus.TRIGGERS_FIRED.subject, TriggerFired))[-1]
    assert retried.id == first.id.removesuffix(".1") + ".2" and retried.correlation_id == first.correlation_id
    assert retried.reasons[-1].startswith(("retried by olga", "retried by ben"))

    # as a person runs it: the same command again says it was done, and publishes nothing new
    env = {**os.environ, "NATS_URL": settings.nats_url or "", "IMPROMPTU_DATA_DIR": str(settings.data_dir)}
    env["IMPROMPTU_FACILITATOR_LOGINS"] = '{"olga": {"roles": ["ops"]}}'  # --by names a login
    again = subprocess.run([IMPROMPTU, "pages", "retry", url, "--by", "olga"], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("already retried by ") and retried.id in again.stdout
    await wait_drained(client, "enrich")
    counts = await subject_counts(client)
    assert counts[bus.TRIGGERS_FIRED.subject] == 2 and counts[bus.PROPOSALS_CREATED.subject] == 1


async def test_a_link_that_never_fired_or_was_read_has_nothing_to_retry(
    stages: NatsBroker, client: NatsBroker, site: tuple[FlakySite, str], settings: Settings
) -> None:
    served, base = site
    served.broken = False
    with pytest.raises(RetryRefused, match="never fired a trigger"):
        await retry_page(client, f"{base}/slow/unknown", by="olga")
    await bus.publish(client, bus.SHARES, share_of(f"{base}/slow/read", "1"))
    await wait_for_count(client, bus.CONTENT_ENRICHED.subject, 1)
    with pytest.raises(RetryRefused, match="was read or is being read"):
        await retry_page(client, f"{base}/slow/read", by="olga")


async def test_the_ops_page_reads_a_failed_page_again_for_the_logged_in_operator(
    stages: NatsBroker, client: NatsBroker, site: tuple[FlakySite, str], settings: Settings
) -> None:
    served, base = site
    url = f"{base}/slow/article"
    first = await failed_once(client, url)
    web_settings = settings.model_copy(update={"facilitator_logins": OPS_LOGINS})
    app = create_web_app(web_settings, client, Approvals(client, web_settings, LiveRules.load(web_settings.rules_file)))
    served.broken = False
    async with logged_in(app, "olga") as olga:
        page = await olga.get("/ops")
        assert 'action="/ops/pages/retry"' in page.text and f'name="url" value="{url}"' in page.text
        data = {"csrftoken": csrf_of(page.text), "url": url}
        done = await olga.post("/ops/pages/retry", data=data)
        assert done.status_code == 303 and done.headers["location"] == "/ops#unread"
        assert f"fired again by olga: the page of {url} is read once more." in (await olga.get("/ops")).text
        await wait_for_count(client, bus.PROPOSALS_CREATED.subject, 1)
        again = await olga.post("/ops/pages/retry", data=data)
        assert again.status_code == 303 and "Already retried by olga" in (await olga.get("/ops")).text
        never = await olga.post("/ops/pages/retry", data={**data, "url": f"{base}/slow/never-shared"})
        assert never.status_code == 409 and "never fired a trigger" in never.text
        assert (await olga.post("/ops/pages/retry", data={"url": url})).status_code == 403  # no CSRF token
    retried = (await models_on(client, bus.TRIGGERS_FIRED.subject, TriggerFired))[-1]
    assert retried.id == first.id.removesuffix(".1") + ".2" and retried.reasons[-1].startswith("retried by olga")
    assert (await subject_counts(client))[bus.TRIGGERS_FIRED.subject] == 2
