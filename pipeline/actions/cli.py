"""`impromptu proposals` and `impromptu facilitators`: what facilitators do, and their logins."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pipeline.cli_support import checked_by, command_settings, load_settings, run_async
from pipeline.errors import ImpromptuError

if TYPE_CHECKING:  # imported where used: `--help` loads no bus
    from pipeline.actions.service import Approvals
    from pipeline.settings import Settings

proposals_cli = typer.Typer(
    no_args_is_help=True, help="What facilitators do: list, show, edit, approve, reject, cancel."
)
facilitators_cli = typer.Typer(no_args_is_help=True, help="Facilitators' logins for the approval pages and API.")


@asynccontextmanager
async def _approvals() -> AsyncIterator[Approvals]:
    from pipeline.actions.service import Approvals
    from pipeline.connect import connected
    from pipeline.domain.live_rules import LiveRules

    settings = command_settings(quiet=True)
    async with connected(settings) as broker:
        yield Approvals(broker, settings, LiveRules.of(settings))


@proposals_cli.command("list")
def proposals_list(
    state: Annotated[str | None, typer.Option(help="Only this state, e.g. proposed.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many of the newest to look at (all those in play).")] = 100,
) -> None:
    """Proposals, newest first: all of those in play, else among the newest --limit."""
    from typing import get_args

    from pipeline.messages import ProposalState

    if state is not None and state not in get_args(ProposalState):  # not "no proposals": no such state
        raise ImpromptuError(f"--state {state!r} is not a state; the states are: {', '.join(get_args(ProposalState))}")

    async def show() -> None:
        async with _approvals() as approvals:
            records = await approvals.listed(state, limit)  # type: ignore[arg-type]
        if not records:
            print("no proposals")
        for record in records:
            p = record.proposal
            sharer = p.content.trigger.share.sharer
            more = len(p.content.trigger.shared_by) - 1 + len(record.also_shared_by)
            sharers = f"{sharer} +{more}" if more > 0 else sharer
            print(f"{p.id}  {record.state:<9} {p.starts_at:%Y-%m-%d %H:%M} UTC  {sharers:<14} {p.title}")

    run_async(show())


@proposals_cli.command("reindex")
def proposals_reindex() -> None:
    """Write the index of proposals from the records (every worker does it once on a bucket made before the
    index existed; this is for repairs). Reads every proposal once."""
    from pipeline.domain.approval import reindex

    async def go() -> int:
        async with _approvals() as approvals:
            return await reindex(approvals.broker)

    print(f"{run_async(go())} proposals indexed")


@proposals_cli.command("show")
def proposals_show(
    proposal_id: str, as_json: Annotated[bool, typer.Option("--json", help="The whole record as JSON.")] = False
) -> None:
    """One proposal: what it will create, each channel's announcement, and its history."""
    from pipeline.actions.views import describe_record

    async def show() -> None:
        async with _approvals() as approvals:
            record = await approvals.get(proposal_id)
            if as_json:
                print(record.model_dump_json(indent=2))
            else:
                print(describe_record(record, await approvals.previews(record)))

    run_async(show())


By = Annotated[str, typer.Option("--by", help="Your login's name (`impromptu facilitators list`), for the audit log.")]


Reason = Annotated[str, typer.Option(help="Why, for the audit log.")]


def _decide(proposal_id: str, done: str, step: Callable[[Approvals], Awaitable[object]]) -> None:
    async def act() -> None:
        async with _approvals() as approvals:
            await step(approvals)

    run_async(act())
    print(f"{proposal_id} {done}")


@proposals_cli.command("approve")
def proposals_approve(proposal_id: str, by: By) -> None:
    """Approve: the session is created at the provider and announced."""
    by = checked_by(by)
    _decide(proposal_id, f"approved by {by}", lambda a: a.approve(proposal_id, by=by))


@proposals_cli.command("reject")
def proposals_reject(proposal_id: str, by: By, reason: Reason = "") -> None:
    """Reject: nothing is created at the provider, nothing is announced."""
    by = checked_by(by)
    _decide(proposal_id, f"rejected by {by}", lambda a: a.reject(proposal_id, by=by, reason=reason))


@proposals_cli.command("cancel")
def proposals_cancel(proposal_id: str, by: By, reason: Reason = "") -> None:
    """Cancel a proposed, approved or scheduled session; one already made is removed at the provider."""
    by = checked_by(by)
    _decide(proposal_id, f"cancelled by {by}", lambda a: a.cancel(proposal_id, by=by, reason=reason))


@proposals_cli.command("edit")
def proposals_edit(
    proposal_id: str,
    by: By,
    title: Annotated[str | None, typer.Option(help="New title.")] = None,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    start: Annotated[
        datetime | None, typer.Option(help="New start, ISO 8601; UTC unless an offset is given.", formats=None)
    ] = None,
    duration: Annotated[int | None, typer.Option(help="New length in minutes.")] = None,
    channels: Annotated[str | None, typer.Option(help="Comma-separated channels to post on, e.g. x,linkedin.")] = None,
) -> None:
    """Change a proposal before deciding; every change is validated and kept in its history."""
    from pipeline.actions.service import ProposalEdit

    by = checked_by(by)

    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    edit = ProposalEdit(
        title=title,
        description=description,
        starts_at=start,
        duration_minutes=duration,
        channels=[c.strip() for c in channels.split(",") if c.strip()] if channels is not None else None,
    )

    async def act() -> None:
        async with _approvals() as approvals:
            record = await approvals.edit(proposal_id, edit, by=by)
        changes = record.last.changes if record.last else {}
        for field, change in changes.items():
            print(f"{field}: {change.before} -> {change.after}")
        print(f"{proposal_id} edited by {by}" if changes else f"{proposal_id}: nothing changed")

    run_async(act())


def _save_logins(settings: Settings, logins: dict[str, Any]) -> None:
    from pydantic import TypeAdapter

    from pipeline.settings import FacilitatorLogin

    settings.logins_file.parent.mkdir(parents=True, exist_ok=True)
    data = TypeAdapter(dict[str, FacilitatorLogin]).dump_json(logins, indent=2)
    temporary = settings.logins_file.with_suffix(".tmp")
    temporary.touch(mode=0o600)
    temporary.write_bytes(data)
    temporary.replace(settings.logins_file)  # whole file or nothing, and never readable by others


MIN_PASSWORD_LENGTH = 10


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ImpromptuError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters: nothing saved")


@facilitators_cli.command("add")
def facilitators_add(
    name: Annotated[str, typer.Argument(help="The facilitator's name, as they will log in.")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    no_password: Annotated[bool, typer.Option("--no-password", help="API token only, no web login.")] = False,
    role: Annotated[
        list[str] | None,
        typer.Option(
            "--role",
            help="facilitator (approval pages and API) or ops (the ops page); repeat for both. Default: facilitator.",
        ),
    ] = None,
) -> None:
    """Add (or reset) a login: a password for the web pages and a new API token, both kept only as hashes in
    DATA_DIR/facilitators.json, and its roles. The token is printed once."""
    from typing import get_args

    from pipeline.domain.logins import hash_password, new_api_token
    from pipeline.settings import FacilitatorLogin, LoginRole

    known = get_args(LoginRole)
    roles = list(dict.fromkeys(role or ["facilitator"]))
    if unknown := [r for r in roles if r not in known]:
        raise ImpromptuError(f"unknown role {unknown[0]!r}: choose {' or '.join(known)}")
    settings = load_settings()
    password: str | None = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif not no_password:
        password = typer.prompt("Password", hide_input=True)
        _check_password(password)  # before the confirmation: typing a refused password twice helps nobody
        if typer.prompt("Repeat for confirmation", hide_input=True) != password:
            raise ImpromptuError("the two passwords differ: nothing saved")
    if password is not None:
        _check_password(password)
    token, token_sha256 = new_api_token()
    logins = settings.saved_logins()
    before = logins.get(name)
    logins[name] = FacilitatorLogin(
        password_hash=hash_password(password) if password is not None else None,
        token_sha256=token_sha256,
        roles=roles,  # type: ignore[arg-type]  # checked against LoginRole above
        slack_user_id=before.slack_user_id if before else None,  # a reset keeps what `facilitators link` set
        email=before.email if before else None,
    )
    _save_logins(settings, logins)
    print(f"{name}: saved in {settings.logins_file} (roles: {', '.join(roles)})")
    print(f"API token (shown once): {token}")


@facilitators_cli.command("link")
def facilitators_link(
    name: Annotated[str, typer.Argument(help="A saved login (`impromptu facilitators add NAME`).")],
    slack_user: Annotated[
        str | None, typer.Option("--slack-user", help="Their Slack member id (U…): Approve / Reject in Slack.")
    ] = None,
    email: Annotated[
        str | None,
        typer.Option("--email", help="Their address in IMPROMPTU_NOTIFY_EMAIL_TO: one-click links in the e-mail."),
    ] = None,
) -> None:
    """Link a login to their Slack account and/or e-mail address, so that their clicks in a notice decide as them
    ("" unlinks)."""
    import re

    settings = load_settings()
    saved = settings.saved_logins()
    if name not in saved:
        raise ImpromptuError(f"no saved login for {name!r}: `impromptu facilitators add {name}` first")
    if slack_user is None and email is None:
        raise ImpromptuError("give --slack-user U… and/or --email ADDRESS")
    changes: dict[str, str | None] = {}
    if slack_user is not None:
        if slack_user and not re.fullmatch(r"[UW][A-Z0-9]{2,30}", slack_user):
            raise ImpromptuError(
                f"--slack-user {slack_user!r} is not a Slack member id (like U012AB3CD: their profile, "
                "⋮ More, Copy member ID)"
            )
        changes["slack_user_id"] = slack_user or None
    if email is not None:
        if email and not re.fullmatch(r"[^@\s]+@[^@\s]+", email):
            raise ImpromptuError(f"--email {email!r} is not an e-mail address")
        changes["email"] = email or None
    saved[name] = saved[name].model_copy(update=changes)
    _save_logins(settings, saved)
    linked = saved[name]
    print(f"{name}: slack {linked.slack_user_id or '(none)'}, e-mail {linked.email or '(none)'}")


@facilitators_cli.command("list")
def facilitators_list() -> None:
    """Who can log in, how, and with which roles."""
    logins = load_settings().current_logins()
    if not logins:
        print("no facilitator logins: add one with `impromptu facilitators add NAME`")
    for name, login in sorted(logins.items()):
        ways = [w for w, on in (("web", login.password_hash), ("api", login.token_sha256)) if on]
        print(f"{name}  {', '.join(ways) or 'none'}  roles: {', '.join(login.roles) or 'none'}")


@facilitators_cli.command("remove")
def facilitators_remove(name: str) -> None:
    """Remove a facilitator's saved login (logins from the environment stay)."""
    settings = load_settings()
    saved = settings.saved_logins()
    if name not in saved:
        raise ImpromptuError(f"no saved login for {name!r} in {settings.logins_file}")
    _save_logins(settings, {k: v for k, v in saved.items() if k != name})
    print(f"{name}: removed")
