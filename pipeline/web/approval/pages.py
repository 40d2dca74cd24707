"""The facilitator's HTML pages: log in, the queue, one proposal (previews, edit, approve, reject, cancel, history).

Server-rendered (Jinja2, autoescaped: every title, summary and post is data), no JavaScript. Every form carries
the CSRF token (csrf.py); every POST answers 303 back to the page with a flash message, or, when the service refuses,
the page again with the reason at the top and at the field, what was typed kept: 409 (already decided, cannot change
now, or changed since it was shown) or 422 (an edit that does not validate). A GET on a form's URL (a reload, a
bookmark) is sent to the proposal's page. The approve form carries the version it was shown: a proposal edited
since is not approved unseen; after a refused edit the page offers no approve button until the edit is fixed or
discarded.
"""

import asyncio
from collections.abc import Awaitable
from datetime import UTC, date, datetime, timedelta
from itertools import groupby
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from pipeline import bus
from pipeline.actions.service import RECENT, Approvals, EditRefused, ProposalEdit
from pipeline.channels.registry import channel_title
from pipeline.domain.approval import BOOKED, OPEN, TEXT_CHANGE, DecisionRefused, ProposalRecord, version_of
from pipeline.messages import IN_PLAY, SessionProposal
from pipeline.settings import Settings
from pipeline.web.auth import (
    CREDENTIAL_KEY,
    EPOCH_KEY,
    SESSION_KEY,
    RoleMissing,
    credential_digest,
    has_role,
    page_facilitator,
    safe_next,
    session_facilitator,
    verify_password,
)
from pipeline.web.sessions import LoginEpochs
from pipeline.web.templating import flash, page, register, see_other, utc
from pipeline.web.throttle import LoginThrottle

log = structlog.get_logger("pipeline.web.pages")

FORM_PATHS = frozenset({"/login", "/logout"})  # and everything under /proposals/
FORM_ACTIONS = ("edit", "approve", "reject", "cancel")  # POST /proposals/ID/<action>; a GET goes to the page
INPUT_TIME = "%Y-%m-%d %H:%M"  # the start as typed, 24 h, in the zone named beside it (as "20:27 UTC" elsewhere)
REASON_MAX = 2000
NAME_MAX = 200
STATE_HELP = {
    "proposed": "waiting for a facilitator",
    "approved": "approved; the session is being created",
    "scheduled": "scheduled; announced",
    "live": "live now",
    "ended": "ended",
    "archived": "in the library",
    "rejected": "rejected",
    "expired": "lapsed without a decision",
    "cancelled": "cancelled",
}
FIELD_LABELS = {
    "title": "Title",
    "description": "Description",
    "starts_at": "Start (UTC)",
    "duration_minutes": "Duration",
    "channels": "Channels",
}
SHOWS = ("undecided", "upcoming", "all")
ACCOUNT_NAME = "Impromptu"  # the name previews show as the poster's


def field_label(name: str) -> str:
    if name.startswith(TEXT_CHANGE):
        return f"{name.removeprefix(TEXT_CHANGE)} text"
    return FIELD_LABELS.get(name, name)


register(
    filters={"field_label": field_label},
    globals={
        "STATE_HELP": STATE_HELP,
        "FIELD_LABELS": FIELD_LABELS,
        "INPUT_TIME": INPUT_TIME,
        "IN_PLAY": IN_PLAY,
        "TEXT_CHANGE": TEXT_CHANGE,
        "ACCOUNT_NAME": ACCOUNT_NAME,
        "MINUTE": timedelta(minutes=1),
        "channel_title": channel_title,  # each adapter's title, asked when the page is rendered
    },
)


async def role_missing_page(request: Request, error: Exception) -> Response:
    """403 for a logged-in person without the page's role (installed as the app's handler of RoleMissing)."""
    if not isinstance(error, RoleMissing):
        raise error
    context = {
        "facilitator": error.name,
        "title": "Not with this login",
        "message": (
            f"You are logged in as {error.name}, which has no {error.role} role: this page is not for it. "
            f"On the pipeline's machine, `impromptu facilitators add {error.name} --role {error.role}` "
            "(with --role for every other role it keeps) gives it."
        ),
    }
    return page(request, "approval/message.html", context, 403)


def form_of(record: ProposalRecord, zone: ZoneInfo) -> dict[str, Any]:
    """The edit form's values as they stand: also what a submitted form is compared with, to find what changed."""
    proposal = record.proposal
    return {
        "title": proposal.title,
        "description": proposal.description,
        "starts_at": f"{proposal.starts_at.astimezone(zone):{INPUT_TIME}}",
        "duration_minutes": str(proposal.duration_minutes),
        "channels": list(proposal.channels),
    }


def local_time(text: str, zone: ZoneInfo) -> datetime:
    """A wall-clock time typed in `zone`, as UTC. A time the clocks skip (spring forward) is refused; one they pass
    twice (fall back) is the first of the two."""
    try:
        typed = datetime.strptime(" ".join(text.replace("T", " ").split()), INPUT_TIME)
    except ValueError:
        raise ValueError(f"is not a date and 24-hour time: YYYY-MM-DD HH:MM, {zone.key} time") from None
    moment = typed.replace(tzinfo=zone).astimezone(UTC)
    if moment.astimezone(zone).replace(tzinfo=None) != typed:
        raise ValueError(f"does not exist in {zone.key}: the clocks skip it that day (summer time starts)")
    return moment


def edit_from_form(
    submitted: dict[str, Any], current: dict[str, Any], zone: ZoneInfo
) -> tuple[ProposalEdit, dict[str, str]]:
    """Only the fields the facilitator changed (the rest stay None: unchanged), and what cannot even be parsed."""
    problems: dict[str, str] = {}
    changes: dict[str, Any] = {}
    for field in ("title", "description"):
        if submitted[field] != current[field]:
            changes[field] = submitted[field]
    if submitted["starts_at"] != current["starts_at"]:
        try:
            changes["starts_at"] = local_time(submitted["starts_at"], zone)
        except ValueError as error:
            problems["starts_at"] = str(error)
    if submitted["duration_minutes"] != current["duration_minutes"]:
        try:
            changes["duration_minutes"] = int(submitted["duration_minutes"].strip())
        except ValueError:
            problems["duration_minutes"] = "must be a whole number of minutes"
    if sorted(submitted["channels"]) != sorted(current["channels"]):
        changes["channels"] = submitted["channels"]
    return ProposalEdit(**changes), problems


def soonest_first(record: ProposalRecord) -> tuple[datetime, str]:
    return record.proposal.starts_at, record.proposal.id


def day_of(proposal: SessionProposal) -> date:
    return proposal.starts_at.astimezone(UTC).date()


def queue_row(record: ProposalRecord) -> dict[str, Any]:
    proposal = record.proposal
    trigger = proposal.content.trigger
    first = trigger.shared_by[0] if trigger.shared_by else None
    return {
        "record": record,
        "proposal": proposal,
        "article": proposal.content.article,
        "sharer": first.name if first else trigger.share.sharer,
        "handle": first.handle if first else trigger.share.sharer,
        "trust": first.trust if first else None,
        "others": [s.name for s in trigger.shared_by[1:]] + [s.name for s in record.also_shared_by],
        "score": trigger.score,
        "rule": trigger.rule,
    }


def pages_router(settings: Settings, approvals: Approvals) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    Facilitator = Annotated[str, Depends(page_facilitator(settings))]

    async def detail(
        request: Request,
        who: str,
        record: ProposalRecord,
        *,
        status: int = 200,
        errors: list[str] | None = None,
        problems: dict[str, str] | None = None,
        form: dict[str, Any] | None = None,
        typed_texts: dict[str, str] | None = None,
    ) -> Response:
        waiting = record.state == "approved" and record.session is None and record.problem is None
        zone = approvals.local_zone(record.proposal)
        problems = problems or {}
        errors = list(errors or [])
        unsaved = bool(problems) and record.state in OPEN
        if unsaved:  # said at the top, where the page opens: the edit below the fold is easy to miss
            named = "; ".join(f"{field_label(field)} {message}" for field, message in problems.items())
            errors.insert(
                0,
                f"Not saved: {named}. The proposal is unchanged (it still starts {utc(record.proposal.starts_at)}); "
                "fix what you typed below and save, or discard it.",
            )
        context = {
            "facilitator": who,
            "row": queue_row(record),
            "record": record,
            "proposal": record.proposal,
            "version": version_of(record),
            "previews": await approvals.previews(record),
            "announcements": await approvals.announcements(record),
            "library_entry": await approvals.library_entry(record),
            "host_time": approvals.host_time(record.proposal),
            "channels_available": approvals.channels_available(),
            "form": form or form_of(record, zone),
            "typed_texts": typed_texts or {},
            "zone": zone.key,
            "problems": problems,
            "form_problems": {k: v for k, v in problems.items() if not k.startswith(TEXT_CHANGE)},
            "errors": errors,
            "unsaved": unsaved,
            "editable": record.state in OPEN,
            "cancellable": record.state in ("approved", "scheduled"),
            "refresh": waiting,
        }
        return page(request, "approval/proposal.html", context, status)

    async def refused(request: Request, who: str, proposal_id: str, error: DecisionRefused, status: int) -> Response:
        log.info("web.action_refused", proposal_id=proposal_id, by=who, reason=str(error))
        try:
            record = await approvals.get(proposal_id)
        except DecisionRefused:
            return not_found(request, who, proposal_id)
        return await detail(request, who, record, status=status, errors=[str(error)])

    def not_found(request: Request, who: str, proposal_id: str) -> Response:
        context = {"facilitator": who, "title": "No such proposal", "message": f"There is no proposal {proposal_id}."}
        return page(request, "approval/message.html", context, 404)

    @router.get("/")
    async def home(request: Request) -> Response:
        name = session_facilitator(request, settings)
        if name is not None and not has_role(settings, name, "facilitator") and has_role(settings, name, "ops"):
            return see_other("/ops")
        return see_other("/proposals")

    @router.get("/login")
    async def login_form(request: Request, next: str = "/proposals") -> Response:
        if session_facilitator(request, settings) is not None:
            return see_other(safe_next(next))
        return page(
            request, "approval/login.html", {"next": safe_next(next), "name": "", "no_logins": not _can_log_in()}
        )

    def _can_log_in() -> bool:
        return any(login.password_hash for login in settings.current_logins().values())

    throttle = LoginThrottle(approvals.broker)
    epochs = LoginEpochs(approvals.broker)

    async def recorded(change: Awaitable[None]) -> None:
        """The count was just read, so the bus answers; should it drop now, the answer to the login stands."""
        try:
            await change
        except bus.NOT_ANSWERING as error:
            log.error("web.login_count_unsaved", reason=f"NATS does not answer: {error!r}")

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        name = str(form.get("name", "")).strip()[:NAME_MAX]
        password = str(form.get("password", ""))
        target = safe_next(str(form.get("next", "")))
        address = request.client.host if request.client else "unknown"
        try:
            wait = await throttle.refused_for(name, address)
        except bus.NOT_ANSWERING as error:
            # no shared count to consult: refuse rather than let guesses through uncounted
            log.error("web.login_unavailable", reason=f"NATS does not answer: {error!r}")
            context = {"next": target, "name": name, "no_logins": not _can_log_in()}
            context["errors"] = ["Logging in is unavailable: the bus does not answer. Try again shortly."]
            return page(request, "approval/login.html", context, 503)
        if wait is not None:
            log.warning("web.login_throttled", name=name, address=address)
            minutes = max(1, round(wait / 60))
            context = {"next": target, "name": name, "no_logins": not _can_log_in()}
            context["errors"] = [f"Too many failed logins: try again in {minutes} min."]
            response = page(request, "approval/login.html", context, 429)
            response.headers["Retry-After"] = str(round(wait))
            return response
        logins = settings.current_logins()
        verified = await asyncio.to_thread(verify_password, logins, name, password) if name and password else False
        if verified:
            await recorded(throttle.forget(name))
            epoch = await epochs.for_login(name)
            request.session.clear()  # a fresh session: nothing from before the login carries over
            request.session[SESSION_KEY] = name
            request.session[EPOCH_KEY] = epoch
            request.session[CREDENTIAL_KEY] = credential_digest(logins[name].password_hash or "")
            log.info("web.login", name=name)
            flash(request, f"Logged in as {name}.")
            if target == "/proposals" and not has_role(settings, name, "facilitator"):
                target = "/ops"  # an ops-only login sent to the default page: its own page instead of a 403
            return see_other(target)
        log.warning("web.login_failed", name=name)
        await recorded(throttle.failed(name, address))
        context = {
            "next": target,
            "name": name,
            "no_logins": not _can_log_in(),
            "errors": ["Wrong name or password."],
        }
        return page(request, "approval/login.html", context, 400)

    @router.get("/logout")
    async def logout_link(request: Request) -> Response:
        """Logging out is a POST (a link or a prefetch must not log anyone out): a GET is sent to the pages."""
        return see_other("/proposals" if session_facilitator(request, settings) else "/login")

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        name = session_facilitator(request, settings)
        if name:
            await epochs.revoke(name)  # first: should the bus not answer (503), the person is still logged in here
        request.session.clear()
        if name:
            log.info("web.logout", name=name)
            flash(request, "Logged out.")
        return see_other("/login")

    @router.get("/proposals")
    async def queue(
        request: Request, who: Facilitator, show: Literal["undecided", "open", "upcoming", "all"] = "undecided"
    ) -> Response:
        shown_as = "undecided" if show == "open" else show  # "open" was the old name: old links still work
        in_play = await approvals.in_play()
        undecided = [r for r in in_play if r.state in OPEN]
        upcoming = sorted(
            (r for r in in_play if r.state in BOOKED), key=lambda r: (r.proposal.starts_at, r.proposal.id)
        )
        shown = {"undecided": undecided, "upcoming": upcoming}.get(shown_as) or []
        if shown_as == "all":
            shown = await approvals.recent()
        days: list[tuple[date, list[dict[str, Any]]]] = []
        if shown_as == "upcoming":
            posts = await asyncio.gather(*(approvals.announcements(r) for r in upcoming))
            rows = [{**queue_row(r), "posts": found} for r, found in zip(upcoming, posts, strict=True)]
            days = [(day, list(group)) for day, group in groupby(rows, key=lambda row: day_of(row["proposal"]))]
        context = {
            "facilitator": who,
            "rows": [queue_row(r) for r in shown],
            "days": days,
            "show": shown_as,
            "undecided_count": len(undecided),
            "upcoming_count": len(upcoming),
            "recent": RECENT,
        }
        return page(request, "approval/queue.html", context)

    async def form_url(who: Facilitator, proposal_id: str) -> Response:
        """A form's URL opened with GET (a reload after a refused edit, a bookmark): the proposal's page."""
        return see_other(f"/proposals/{proposal_id}")

    for action in FORM_ACTIONS:
        router.add_api_route(f"/proposals/{{proposal_id}}/{action}", form_url, methods=["GET"])
    router.add_api_route("/proposals/{proposal_id}/texts/{channel}", form_url, methods=["GET"])

    @router.get("/proposals/{proposal_id}")
    async def proposal_page(request: Request, who: Facilitator, proposal_id: str) -> Response:
        try:
            record = await approvals.get(proposal_id)
        except DecisionRefused:
            return not_found(request, who, proposal_id)
        return await detail(request, who, record)

    @router.post("/proposals/{proposal_id}/edit")
    async def edit(request: Request, who: Facilitator, proposal_id: str) -> Response:
        try:
            record = await approvals.get(proposal_id)
        except DecisionRefused:
            return not_found(request, who, proposal_id)
        data = await request.form()
        zone = approvals.local_zone(record.proposal)
        current = form_of(record, zone)
        submitted = {
            "title": str(data.get("title", current["title"])),
            "description": str(data.get("description", current["description"])).replace("\r\n", "\n"),
            "starts_at": str(data.get("starts_at", current["starts_at"])),
            "duration_minutes": str(data.get("duration_minutes", current["duration_minutes"])),
            "channels": [str(c) for c in data.getlist("channels")] if "channels_shown" in data else current["channels"],
        }
        changes, problems = edit_from_form(submitted, current, zone)
        if problems:
            log.info("web.edit_refused", proposal_id=proposal_id, by=who, problems=problems)
            return await detail(request, who, record, status=422, problems=problems, form=submitted)
        if not changes.model_dump(exclude_none=True):
            flash(request, "Nothing changed.")
            return see_other(f"/proposals/{proposal_id}")
        try:
            updated = await approvals.edit(proposal_id, changes, by=who)
        except EditRefused as error:
            log.info("web.edit_refused", proposal_id=proposal_id, by=who, problems=error.problems)
            return await detail(request, who, record, status=422, problems=error.problems, form=submitted)
        except DecisionRefused as error:
            return await refused(request, who, proposal_id, error, 409)
        if len(updated.history) == len(record.history) or updated.last is None:
            flash(request, "Nothing changed.")
        else:
            labels = ", ".join(field_label(f).lower() for f in updated.last.changes)
            flash(request, f"Saved: {labels}.")
        return see_other(f"/proposals/{proposal_id}")

    @router.post("/proposals/{proposal_id}/texts/{channel}")
    async def write_text(request: Request, who: Facilitator, proposal_id: str, channel: str) -> Response:
        """A channel's announcement written by hand (`action=save`), or given back to its template (`template`)."""
        data = await request.form()
        # the body is bounded (limits.py); the text's own length is the service's to refuse, never cut silently
        text = str(data.get("text", "")).replace("\r\n", "\n").strip()
        back_to_template = data.get("action") == "template"
        try:
            record = await approvals.get(proposal_id)
        except DecisionRefused:
            return not_found(request, who, proposal_id)
        field = f"{TEXT_CHANGE}{channel}"
        if not back_to_template and not text:
            problems = {field: "is empty: write the text, or go back to the template"}
            return await detail(request, who, record, status=422, problems=problems, typed_texts={channel: text})
        try:
            updated = await approvals.edit(
                proposal_id, ProposalEdit(texts={channel: "" if back_to_template else text}), by=who
            )
        except EditRefused as error:
            log.info("web.edit_refused", proposal_id=proposal_id, by=who, problems=error.problems)
            return await detail(request, who, record, status=422, problems=error.problems, typed_texts={channel: text})
        except DecisionRefused as error:
            return await refused(request, who, proposal_id, error, 409)
        if len(updated.history) == len(record.history):
            flash(request, "Nothing changed.")
        elif back_to_template:
            flash(request, f"The {channel} announcement uses its template again.")
        else:
            flash(request, f"Saved: the {channel} text.")
        return see_other(f"/proposals/{proposal_id}#preview-{channel}")

    @router.post("/proposals/{proposal_id}/approve")
    async def approve(request: Request, who: Facilitator, proposal_id: str) -> Response:
        seen = str((await request.form()).get("version", "")).strip()
        try:
            await approvals.approve(proposal_id, by=who, seen_version=int(seen) if seen.isdigit() else None)
        except DecisionRefused as error:
            return await refused(request, who, proposal_id, error, 409)
        flash(request, "Approved. The session is being created; its join link appears here in a moment.")
        return see_other(f"/proposals/{proposal_id}")

    async def _with_reason(
        request: Request, who: str, proposal_id: str, action: Literal["reject", "cancel"]
    ) -> Response:
        reason = " ".join(str((await request.form()).get("reason", "")).split())[:REASON_MAX]
        if not reason:
            try:
                record = await approvals.get(proposal_id)
            except DecisionRefused:
                return not_found(request, who, proposal_id)
            problem = {"reject": "Say why it is rejected.", "cancel": "Say why it is cancelled."}[action]
            return await detail(request, who, record, status=422, errors=[problem])
        try:
            if action == "reject":
                await approvals.reject(proposal_id, by=who, reason=reason)
            else:
                await approvals.cancel(proposal_id, by=who, reason=reason)
        except DecisionRefused as error:
            return await refused(request, who, proposal_id, error, 409)
        flash(request, "Rejected." if action == "reject" else "Cancelled.")
        return see_other(f"/proposals/{proposal_id}")

    @router.post("/proposals/{proposal_id}/reject")
    async def reject(request: Request, who: Facilitator, proposal_id: str) -> Response:
        return await _with_reason(request, who, proposal_id, "reject")

    @router.post("/proposals/{proposal_id}/cancel")
    async def cancel(request: Request, who: Facilitator, proposal_id: str) -> Response:
        return await _with_reason(request, who, proposal_id, "cancel")

    return router
