"""The ops page: the five stages as a flow, the last dead letters, and Replay / Discard for the waiting ones.

`/ops` (HTML, refreshes itself), `/ops/status.json` (the same, as JSON), `/ops/dead-letters/SEQ` (one dead letter,
with Replay and Discard-with-a-reason, on a page that does not refresh under a half-typed reason). Only for a login
with the `ops` role (the session cookie of the approval pages; status.json also takes that login's Bearer token);
the forms are CSRF-checked by the middleware `install_approval_web` adds, which is why `create_web_app` installs this
router together with the approval pages.

Nothing here computes health or dead letters anew: the numbers are what `impromptu status` (gather_status,
health_problems) and `impromptu dlq` (list_dead_letters, replay, discard) read, plus the stream's per-subject counts,
all read when the page is asked for; when NATS does not answer, the page says so (503) rather than show old numbers.
"""

import asyncio  # no `from __future__ import annotations`: FastAPI must resolve the routes' local Annotated types
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials
from faststream.nats import NatsBroker
from nats.js import JetStreamContext

from pipeline import bus
from pipeline.channels.records import PostRecord
from pipeline.domain.notify import notice_status
from pipeline.errors import PermanentError
from pipeline.messages import DeadLetter, EnrichmentFailed, utc_now
from pipeline.ops.dlq import DeadLetterEntry, DlqError, discard, get_dead_letter, list_dead_letters, replay
from pipeline.ops.status import (
    DEFAULT_MAX_AGE_SECONDS,
    STAGE_CONSUMERS,
    StageStatus,
    StatusReport,
    StreamStatus,
    format_age,
    gather_status,
    health_problems,
)
from pipeline.ops.tail import summarize
from pipeline.ops.trace import read_stream
from pipeline.outreach.health import ChannelHealth
from pipeline.outreach.operations import needing_a_person, reset_channel, resolve_post
from pipeline.settings import Settings
from pipeline.triggers.retry import RetryRefused, retry_page
from pipeline.web.auth import bearer, has_role, page_user, role_refused, session_facilitator, token_user
from pipeline.web.templating import flash, page, register

log = structlog.get_logger("pipeline.ops.web")

REFRESH_SECONDS = 5
RECENT_LIMIT = 20  # dead letters under "last errors"
UNREAD_LIMIT = 10  # pages that could not be read, newest first
UNREAD_WINDOW = timedelta(hours=24)
WAITING_LIMIT = 100  # waiting dead letters listed with their buttons (the rest: `impromptu dlq list`)
REASON_MAX = 2000

# What each stage publishes (its routers' `output`s; a test keeps this in step with them). What it consumes is
# STAGE_CONSUMERS's subjects. Dead letters are counted apart; proposal transitions are written by whoever decides.
FLOW: dict[str, tuple[str, ...]] = {
    "trigger": (bus.TRIGGERS_FIRED.subject, bus.TRIGGERS_JOINED.subject),
    "enrich": (bus.CONTENT_ENRICHED.subject, bus.CONTENT_FAILED.subject),
    "actions": (bus.PROPOSALS_CREATED.subject, bus.SESSIONS_SCHEDULED.subject),
    "outreach": (bus.OUTREACH_DUE.subject, bus.OUTREACH_RESULTS.subject),
    "archive": (bus.LIBRARY_ENTRIES.subject,),
}


# Subjects a stage writes and reads itself (outreach's one-post-per-channel hand-off): neither in nor out.
INTERNAL: dict[str, tuple[str, ...]] = {"outreach": (bus.OUTREACH_DUE.subject,)}


def stage_inputs(stage: str) -> tuple[str, ...]:
    inner = INTERNAL.get(stage, ())
    return tuple(dict.fromkeys(c.subject for c in STAGE_CONSUMERS if c.stage == stage and c.subject not in inner))


def stage_outputs(stage: str) -> tuple[str, ...]:
    return tuple(subject for subject in FLOW[stage] if subject not in INTERNAL.get(stage, ()))


@dataclass(frozen=True)
class FlowStage:
    name: str
    inputs: dict[str, int]  # subject it consumes -> messages stored on it
    outputs: dict[str, int]  # subject it publishes -> messages stored on it
    consumers: list[StageStatus]
    dead_letters_waiting: int
    dead_letters_stored: int  # waiting, replayed and discarded
    problems: list[str]

    @property
    def messages_in(self) -> int:
        return sum(self.inputs.values())

    @property
    def messages_out(self) -> int:
        return sum(self.outputs.values())

    @property
    def backlog(self) -> int:
        return sum(c.pending + c.ack_pending for c in self.consumers)

    @property
    def oldest_unacked_age(self) -> float:
        return max((c.oldest_unacked_age for c in self.consumers), default=0.0)

    @property
    def redelivered(self) -> int:
        return sum(c.redelivered for c in self.consumers)

    @property
    def worker(self) -> str:
        """yes (every consumer has a live worker), no, or `n of m consumers`; missing consumers are said."""
        live = sum(c.live for c in self.consumers)
        missing = sum(not c.exists for c in self.consumers)
        if missing:
            return f"{missing} of {len(self.consumers)} consumers missing"
        if live == len(self.consumers):
            return "yes"
        return "no" if live == 0 else f"{live} of {len(self.consumers)} consumers"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "healthy": not self.problems,
            "problems": self.problems,
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "backlog": self.backlog,
            "oldest_unacked_age": self.oldest_unacked_age,
            "redelivered": self.redelivered,
            "live_worker": self.worker,
            "dead_letters_waiting": self.dead_letters_waiting,
            "dead_letters_stored": self.dead_letters_stored,
            "consumers": [asdict(c) for c in self.consumers],
        }


@dataclass(frozen=True)
class UnreadPage:
    """A shared page the enrich stage could not read: not a dead letter (the rule decides whether the post's text
    will do), but the most common reason a share from a trusted person makes no proposal."""

    seq: int
    at: datetime
    url: str
    reason: str
    detail: str
    correlation_id: str


async def unread_pages(js: JetStreamContext, now: datetime) -> list[UnreadPage]:
    """The last UNREAD_LIMIT `EnrichmentFailed` of the last UNREAD_WINDOW, newest first: the server seeks by time on
    that one subject, so this reads only the day's failures, never the whole stream."""
    found: list[UnreadPage] = []
    async for msg in read_stream(js, bus.CONTENT_FAILED.subject, since=now - UNREAD_WINDOW):
        try:
            failed: EnrichmentFailed | None = EnrichmentFailed.model_validate_json(msg.data)
        except ValueError:
            failed = None  # not ours to judge here: the stages dead-letter malformed messages
        if failed is not None:
            seq, at = msg.metadata.sequence.stream, msg.metadata.timestamp
            page = UnreadPage(seq, at, failed.url, failed.reason, failed.detail, failed.correlation_id)
            found = [page, *found][:UNREAD_LIMIT]
    return found


@dataclass(frozen=True)
class OpsView:
    generated_at: datetime
    max_age: float
    problems: list[str]
    stages: list[FlowStage]
    subjects: dict[str, int]  # every subject in the stream -> messages stored
    stream: StreamStatus
    recent: list[DeadLetterEntry]  # newest first, in any state
    waiting: list[DeadLetterEntry]  # oldest first
    waiting_total: int
    unread: list[UnreadPage]  # newest first
    channels_broken: list[ChannelHealth]  # outreach channels that refused our credentials
    posts_unknown: list[tuple[str, PostRecord]]  # posts a person must check: (key, record)

    def as_json(self) -> dict[str, Any]:
        """JSON-ready (times as ISO 8601 strings)."""
        encoded: dict[str, Any] = jsonable_encoder(
            {
                "generated_at": self.generated_at,
                "healthy": not self.problems,
                "problems": self.problems,
                "max_age": self.max_age,
                "stages": [stage.as_json() for stage in self.stages],
                "subjects": self.subjects,
                "stream": asdict(self.stream),
                "last_errors": [dead_letter_json(entry) for entry in self.recent],
                "waiting": [dead_letter_json(entry) for entry in self.waiting],
                "waiting_total": self.waiting_total,
                "unread_pages": [asdict(page) for page in self.unread],
                "channels_broken": [health.model_dump() for health in self.channels_broken],
                "posts_unknown": [
                    {"key": key, "reason": record.reason, "text": record.text} for key, record in self.posts_unknown
                ],
            }
        )
        return encoded


def dead_letter_json(entry: DeadLetterEntry) -> dict[str, Any]:
    """What the page shows of a dead letter: never its body or headers (`impromptu dlq show SEQ` has them)."""
    dead = entry.dead_letter
    return {
        "seq": entry.seq,
        "stage": dead.stage,
        "subject": dead.subject,
        "failed_at": dead.failed_at,
        "reason": dead.reason,
        "error_type": dead.error_type,
        "permanent": dead.permanent,
        "deliveries": dead.deliveries,
        "correlation_id": dead.correlation_id,
        "summary": summary_of(dead),
        "record": entry.record.model_dump(mode="json"),
    }


def summary_of(dead: DeadLetter) -> str:
    """What the message the stage gave up on was about, in one line (as `impromptu tail` says it)."""
    return summarize(dead.subject, dead.data.encode())


def stage_problems(report: StatusReport, stage: str, max_age: float) -> list[str]:
    """health_problems of this stage alone (its consumers and dead letters; the stream, its limits and replicas,
    is judged once, above)."""
    unlimited = replace(report.stream, max_msgs=-1, max_bytes=-1, replicas=1, leader=None, peers={})
    alone = replace(
        report,
        stream=unlimited,
        stages=[s for s in report.stages if s.stage == stage],
        dead_letters={stage: report.dead_letters.get(stage, 0)},
    )
    return health_problems(alone, max_age)


async def gather_view(broker: NatsBroker, max_age: float = DEFAULT_MAX_AGE_SECONDS) -> OpsView:
    js = bus.jetstream(broker)
    now = utc_now()
    report, info, entries, unread, (broken, unknown) = await asyncio.gather(
        gather_status(broker),
        js.stream_info(bus.STREAM, subjects_filter=">"),
        list_dead_letters(broker, every=True),
        unread_pages(js, now),
        needing_a_person(broker),
    )
    subjects = dict(sorted((info.state.subjects or {}).items()))
    waiting_entries = [entry for entry in entries if entry.record.state == "waiting"]
    stages = [
        FlowStage(
            name=name,
            inputs={subject: subjects.get(subject, 0) for subject in stage_inputs(name)},
            outputs={subject: subjects.get(subject, 0) for subject in stage_outputs(name)},
            consumers=[s for s in report.stages if s.stage == name],
            dead_letters_waiting=report.dead_letters.get(name, 0),
            dead_letters_stored=report.dead_letters_stored.get(name, 0),
            problems=stage_problems(report, name, max_age),
        )
        for name in FLOW
    ]
    return OpsView(
        generated_at=now,
        max_age=max_age,
        problems=health_problems(report, max_age),
        stages=stages,
        subjects=subjects,
        stream=report.stream,
        recent=entries[::-1][:RECENT_LIMIT],
        waiting=waiting_entries[:WAITING_LIMIT],
        waiting_total=len(waiting_entries),
        unread=unread,
        channels_broken=broken,
        posts_unknown=unknown,
    )


register(filters={"age": format_age, "summary": summary_of})


@dataclass(frozen=True)
class OpsPages:
    """What the ops routes read, kept on app.state.ops_pages by `install_ops_pages`: the settings (logins, roles,
    notices) and the broker."""

    settings: Settings
    broker: NatsBroker


def ops_pages(request: Request) -> OpsPages:
    pages: OpsPages = request.app.state.ops_pages
    return pages


Ops = Annotated[OpsPages, Depends(ops_pages)]


def operator(request: Request, ops: Ops) -> str:
    """A logged-in person with the ops role (the page's login cookie), else a 303 to the login page."""
    return page_user(ops.settings, "ops")(request)


Operator = Annotated[str, Depends(operator)]


def render(
    request: Request, ops: OpsPages, who: str, name: str, context: dict[str, Any], status: int = 200
) -> Response:
    values = {
        "who": who,
        "facilitates": has_role(ops.settings, who, "facilitator"),
        "refresh": False,
        "REFRESH_SECONDS": REFRESH_SECONDS,
        "REASON_MAX": REASON_MAX,
        **context,
    }
    return page(request, name, values, status)


def unavailable(request: Request, ops: OpsPages, who: str, error: Exception) -> Response:
    reason = bus.not_answering_reason(error)
    log.warning("ops.nats_unavailable", path=request.url.path, reason=reason)
    context = {
        "title": "NATS does not answer",
        "message": f"The bus could not be read: {reason}. Nothing is shown rather than "
        "numbers that may be out of date; this page tries again by itself.",
        "refresh": True,
    }
    response = render(request, ops, who, "ops/ops_message.html", context, 503)
    response.headers["Retry-After"] = str(bus.RETRY_AFTER_SECONDS)
    return response


def not_found(request: Request, ops: OpsPages, who: str, error: DlqError) -> Response:
    context = {"title": "No such dead letter", "message": str(error)}
    return render(request, ops, who, "ops/ops_message.html", context, 404)


async def detail(
    request: Request,
    ops: OpsPages,
    who: str,
    seq: int,
    status: int = 200,
    errors: list[str] | None = None,
    reason: str = "",
) -> Response:
    try:
        entry = await get_dead_letter(ops.broker, seq)
    except DlqError as error:
        return not_found(request, ops, who, error)
    context = {"entry": entry, "dead": entry.dead_letter, "errors": errors or [], "reason": reason}
    return render(request, ops, who, "ops/dead_letter.html", context, status)


async def ops_page(request: Request, who: Operator, ops: Ops) -> Response:
    try:
        view = await gather_view(ops.broker)
    except bus.NOT_ANSWERING as error:
        return unavailable(request, ops, who, error)
    context = {"view": view, "refresh": True, "notices": notice_status(ops.settings)}
    return render(request, ops, who, "ops/ops.html", context)


def json_operator(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)], ops: Ops
) -> str:
    """An ops login by Bearer token, else by the page's login cookie; 401 with neither, 403 without the role."""
    if credentials is not None:
        name = token_user(ops.settings, credentials, request.url.path)
    else:
        found = session_facilitator(request, ops.settings)
        if found is None:
            hint = "log in at /login, or send Authorization: Bearer <token> of a login with the ops role"
            raise HTTPException(status_code=401, detail=hint, headers={"WWW-Authenticate": "Bearer"})
        name = found
    if not has_role(ops.settings, name, "ops"):
        raise role_refused(name, "ops", request.url.path)
    return name


async def ops_status(who: Annotated[str, Depends(json_operator)], ops: Ops) -> JSONResponse:
    try:
        view = await gather_view(ops.broker)
    except bus.NOT_ANSWERING as error:
        reason = bus.not_answering_reason(error)
        log.warning("ops.nats_unavailable", path="/ops/status.json", reason=reason)
        body: dict[str, object] = {"error": "unavailable", "detail": f"{reason}; try again shortly"}
        headers = {"Cache-Control": "no-store", "Retry-After": str(bus.RETRY_AFTER_SECONDS)}
        return JSONResponse(body, status_code=503, headers=headers)
    notices = notice_status(ops.settings)
    body = {**view.as_json(), "notices": {**notices.model_dump(), "summary": notices.summary()}}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def dead_letter_page(request: Request, who: Operator, ops: Ops, seq: int) -> Response:
    try:
        return await detail(request, ops, who, seq)
    except bus.NOT_ANSWERING as error:
        return unavailable(request, ops, who, error)


async def act(request: Request, ops: OpsPages, who: str, seq: int, action: Literal["replay", "discard"]) -> Response:
    form = await request.form()
    back = f"/ops/dead-letters/{seq}" if form.get("back") == "detail" else "/ops"
    reason = " ".join(str(form.get("reason", "")).split())[:REASON_MAX]
    try:
        entry = await get_dead_letter(ops.broker, seq)
    except DlqError as error:
        return not_found(request, ops, who, error)
    if action == "discard" and not reason:
        return await detail(request, ops, who, seq, 422, ["Say why you discard it: it is kept with the record."])
    try:
        if action == "replay":
            record = await replay(ops.broker, seq, who)
            done = f"back on {entry.dead_letter.subject} as message {record.replay_seq}"
        else:
            await discard(ops.broker, seq, who, reason)
            done = f"kept in the stream; the reason is recorded: {reason}"
    except DlqError as error:  # already replayed or discarded, by someone, at some time: said as it is
        log.info("ops.dlq_refused", seq=seq, action=action, by=who, reason=str(error))
        return await detail(request, ops, who, seq, 409, [str(error)], reason)
    log.info(f"ops.dlq_{action}ed", seq=seq, by=who)
    flash(request, f"Dead letter {seq} {action}ed by {who}: {done}.")
    return RedirectResponse(back, status_code=303)


async def replay_dead_letter(request: Request, who: Operator, ops: Ops, seq: int) -> Response:
    try:
        return await act(request, ops, who, seq, "replay")
    except bus.NOT_ANSWERING as error:
        return unavailable(request, ops, who, error)


async def discard_dead_letter(request: Request, who: Operator, ops: Ops, seq: int) -> Response:
    try:
        return await act(request, ops, who, seq, "discard")
    except bus.NOT_ANSWERING as error:
        return unavailable(request, ops, who, error)


async def outreach_act(request: Request, ops: OpsPages, who: str, action: Any) -> Response:
    try:
        done = await action
    except PermanentError as error:  # settled already (by someone), or nothing to post again: said as it is
        return render(request, ops, who, "ops/ops_message.html", {"title": "Not done", "message": str(error)}, 409)
    log.info("ops.outreach_settled", by=who, done=done)
    flash(request, f"{done} (by {who}).")
    return RedirectResponse("/ops#outreach", status_code=303)


async def retry_unread_page(request: Request, who: Operator, ops: Ops) -> Response:
    url = str((await request.form()).get("url", "")).strip()
    try:
        done = await retry_page(ops.broker, url, by=who)
    except RetryRefused as error:  # never fired, read since, or re-opened by a share: said as it is
        return render(request, ops, who, "ops/ops_message.html", {"title": "Not retried", "message": str(error)}, 409)
    except ValueError as error:  # not a URL at all
        return render(request, ops, who, "ops/ops_message.html", {"title": "Not retried", "message": str(error)}, 422)
    except bus.NOT_ANSWERING as error:
        return unavailable(request, ops, who, error)
    if done.again:
        flash(request, f"Already retried by {done.by}: {done.trigger.id} was published again (kept once).")
    else:
        log.info("ops.page_retried", url=url, by=who, trigger_id=done.trigger.id)
        flash(request, f"{done.trigger.id} fired again by {who}: the page of {url} is read once more.")
    return RedirectResponse("/ops#unread", status_code=303)


async def reset_broken_channel(request: Request, who: Operator, ops: Ops, name: str) -> Response:
    try:
        return await outreach_act(request, ops, who, reset_channel(ops.broker, name))
    except bus.NOT_ANSWERING as error:
        return unavailable(request, ops, who, error)


async def resolve_unknown_post(request: Request, who: Operator, ops: Ops, key: str) -> Response:
    form = await request.form()
    url = str(form.get("url", "")).strip()
    if form.get("outcome") == "posted" and not url.startswith(("https://", "http://")):
        message = "Say where it can be seen: the post's http(s) address, so the session's page links to it."
        return render(request, ops, who, "ops/ops_message.html", {"title": "Not done", "message": message}, 422)
    posted_at = url if form.get("outcome") == "posted" else None
    try:
        return await outreach_act(request, ops, who, resolve_post(ops.broker, key, posted_at=posted_at))
    except bus.NOT_ANSWERING as error:
        return unavailable(request, ops, who, error)


# The ops pages' routes, in one place. Only status.json is in the OpenAPI document (a script's endpoint).
ROUTES: tuple[APIRoute, ...] = (
    APIRoute("/ops", ops_page, methods=["GET"], include_in_schema=False),
    APIRoute(
        "/ops/status.json",
        ops_status,
        methods=["GET"],
        tags=["ops"],
        summary="What the ops page shows: each stage's counts, backlog, worker, dead letters; problems; dead letters.",
    ),
    APIRoute("/ops/dead-letters/{seq}", dead_letter_page, methods=["GET"], include_in_schema=False),
    APIRoute("/ops/dead-letters/{seq}/replay", replay_dead_letter, methods=["POST"], include_in_schema=False),
    APIRoute("/ops/dead-letters/{seq}/discard", discard_dead_letter, methods=["POST"], include_in_schema=False),
    APIRoute("/ops/pages/retry", retry_unread_page, methods=["POST"], include_in_schema=False),
    APIRoute("/ops/channels/{name}/reset", reset_broken_channel, methods=["POST"], include_in_schema=False),
    APIRoute("/ops/posts/{key}/resolve", resolve_unknown_post, methods=["POST"], include_in_schema=False),
)


def install_ops_pages(app: FastAPI, settings: Settings, broker: NatsBroker) -> None:
    """The ops page's routes, with what they read on app.state; they need the session and CSRF middlewares
    `install_approval_web` adds."""
    app.state.ops_pages = OpsPages(settings, broker)
    app.include_router(APIRouter(routes=list(ROUTES)))
