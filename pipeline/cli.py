"""The `impromptu` command: run the pipeline, the demo, and the facilitator's and operator's tools."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from pipeline.archive.cli import library_cli
from pipeline.errors import ImpromptuError
from pipeline.outreach.cli import channels_cli, linkedin_cli, outreach_cli, render_command

if TYPE_CHECKING:
    from pipeline.actions.service import Approvals
    from pipeline.settings import Settings

# Start-up: this module and the sub-apps' modules import only typer and light modules at the top; each command
# imports what it uses (faststream, the stages, trafilatura, jinja, botocore), so `--help` and the light commands
# start fast. tests/unit/test_cli_startup.py checks it; bench/cli_start.py measures it.
ALL_SUBJECTS = "impromptu.>"  # bus.ALL_SUBJECTS, spelled here so that `tail --help` needs no bus

T = TypeVar("T")

cli = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, pretty_exceptions_enable=False)
proposals = typer.Typer(no_args_is_help=True, help="What facilitators do: list, show, edit, approve, reject, cancel.")
facilitators_cli = typer.Typer(no_args_is_help=True, help="Facilitators' logins for the approval pages and API.")
rules_cli = typer.Typer(no_args_is_help=True, help="Trigger rules files.")
schemas_cli = typer.Typer(no_args_is_help=True, help="JSON Schema of every message.")
cli.add_typer(proposals, name="proposals")
cli.add_typer(facilitators_cli, name="facilitators")
cli.add_typer(library_cli, name="library")
cli.add_typer(rules_cli, name="rules")
cli.add_typer(schemas_cli, name="schemas")
cli.add_typer(channels_cli, name="channels")
cli.add_typer(outreach_cli, name="outreach")
cli.add_typer(linkedin_cli, name="linkedin")
cli.command("render")(render_command)


def load_settings() -> Settings:
    """The settings alone, for a command that logs nothing (`facilitators list`, `rules check`): structlog and the
    logging set-up cost ~0.1 s of their start."""
    from pipeline.settings import load_settings as load

    return load()


def _settings(quiet: bool = False) -> Settings:
    from pipeline.logs import configure_logging

    settings = load_settings()
    configure_logging(json=settings.log_json, level="WARNING" if quiet else settings.log_level)
    return settings


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    import asyncio  # here, not at the top: asyncio alone is ~60 ms of a `--help`

    return asyncio.run(coroutine)


@cli.command()
def run(
    stages: Annotated[
        str | None,
        typer.Option(
            "--stages",
            help="Only these stages, comma-separated: trigger, enrich, actions, outreach, archive "
            "(default: IMPROMPTU_STAGES, else all). The HTTP server and the clock go with actions, the sources "
            "with trigger; some stages only join a running pipeline (NATS_URL, or the one `impromptu run` embeds).",
        ),
    ] = None,
) -> None:
    """Run every stage (or some); embeds a NATS server when NATS_URL is not set. Ctrl-C stops it all."""
    import structlog

    from pipeline import bus
    from pipeline.app import serve
    from pipeline.settings import parse_stages

    settings = _settings()
    if stages is not None:
        try:
            settings = settings.model_copy(update={"stages": parse_stages(stages)})
        except ValueError as error:
            raise ImpromptuError(f"--stages {stages}: {error}") from None
    try:
        _run(serve(settings))
    except (ImpromptuError, *bus.NOT_ANSWERING) as error:  # a taken port, NATS unreachable: one event, not a line
        reason = bus.not_answering_reason(error) if isinstance(error, bus.NOT_ANSWERING) else str(error)
        structlog.get_logger("pipeline.app").error("pipeline.failed", reason=reason)
        sys.exit(1)


@cli.command()
def demo(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the stages' logs too.")] = False,
    serve: Annotated[
        bool, typer.Option("--serve", help="Keep the library (and the bus) up afterwards, until Ctrl-C.")
    ] = False,
) -> None:
    """The seed story end to end, in seconds, on an embedded NATS server; ends with the recording in the library."""
    from pipeline import tracing
    from pipeline.demo import run_demo
    from pipeline.logs import configure_logging

    settings = load_settings()
    # the story's own lines only, unless asked: the demo's settings are a demo's (no webhook secret, say)
    configure_logging(json=settings.log_json, level=settings.log_level if verbose else "ERROR")
    with tracing.traced(settings.stages):  # OTEL_EXPORTER_OTLP_ENDPOINT set: the story is one trace in a collector
        _run(run_demo(settings, serve=serve))


@cli.command()
def share(
    url: str,
    by: Annotated[str, typer.Option("--by", help="Who shared it, e.g. @britz.")],
    text: Annotated[str, typer.Option(help="The post's text.")] = "",
    share_id: Annotated[str | None, typer.Option("--id", help="Stable id; defaults to the URL + sharer.")] = None,
) -> None:
    """Put a share on the bus by hand (same path as every source)."""
    from pipeline import bus
    from pipeline.connect import connected
    from pipeline.messages import Share, stable_id

    async def publish() -> None:
        message = Share.from_source(
            source="cli", native_id=share_id or stable_id("s", url, by), sharer=by, text=text, url=url
        )
        async with connected(_settings(quiet=True)) as broker:
            ack = await bus.publish(broker, bus.SHARES, message)
        print(f"{message.id} {'already on the bus' if ack.duplicate else 'published'} (seq {ack.seq})")

    _run(publish())


@cli.command()
def replay(file: Path) -> None:
    """Put every share in FILE.jsonl on the bus (one a line: a bus Share or a webhook body; # comments).

    Shares already on the bus are not published twice. Exit 1 with FILE:LINE: field: message for each invalid line.
    """
    from pipeline.connect import connected
    from pipeline.triggers.replay import ReplayCount, progress_bar, publish_shares, read_replay_file

    parsed = read_replay_file(file)
    for error in parsed.errors:
        print(error, file=sys.stderr)

    async def publish() -> ReplayCount:
        async with connected(_settings(quiet=True)) as broker:
            with progress_bar(len(parsed.shares), f"replaying {file.name}") as advance:
                return await publish_shares(broker, parsed.shares, advance)

    count = _run(publish()) if parsed.shares else ReplayCount()
    invalid = len({error.line for error in parsed.errors})
    print(f"{file}: {count.new} published, {count.duplicates} already on the bus, {invalid} invalid line(s)")
    if parsed.errors:
        raise typer.Exit(1)


@asynccontextmanager
async def _approvals() -> AsyncIterator[Approvals]:
    from pipeline.actions.service import Approvals
    from pipeline.connect import connected
    from pipeline.domain.live_rules import LiveRules

    settings = _settings(quiet=True)
    async with connected(settings) as broker:
        yield Approvals(broker, settings, LiveRules.of(settings))


@proposals.command("list")
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

    _run(show())


@proposals.command("reindex")
def proposals_reindex() -> None:
    """Write the index of proposals from the records (every worker does it once on a bucket made before the
    index existed; this is for repairs). Reads every proposal once."""
    from pipeline.domain.approval import reindex

    async def go() -> int:
        async with _approvals() as approvals:
            return await reindex(approvals.broker)

    print(f"{_run(go())} proposals indexed")


@proposals.command("show")
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

    _run(show())


By = Annotated[str, typer.Option("--by", help="Your login's name (`impromptu facilitators list`), for the audit log.")]


Reason = Annotated[str, typer.Option(help="Why, for the audit log.")]


def _checked_by(name: str) -> str:
    """--by NAME: one of the logins (the audit trail holds no invented names); UnknownLogin listing them."""
    from pipeline.domain.logins import known_login

    return known_login(load_settings(), name)


def _decide(proposal_id: str, done: str, step: Callable[[Approvals], Awaitable[object]]) -> None:
    async def act() -> None:
        async with _approvals() as approvals:
            await step(approvals)

    _run(act())
    print(f"{proposal_id} {done}")


@proposals.command("approve")
def proposals_approve(proposal_id: str, by: By) -> None:
    """Approve: the session is created at the provider and announced."""
    by = _checked_by(by)
    _decide(proposal_id, f"approved by {by}", lambda a: a.approve(proposal_id, by=by))


@proposals.command("reject")
def proposals_reject(proposal_id: str, by: By, reason: Reason = "") -> None:
    """Reject: nothing is created at the provider, nothing is announced."""
    by = _checked_by(by)
    _decide(proposal_id, f"rejected by {by}", lambda a: a.reject(proposal_id, by=by, reason=reason))


@proposals.command("cancel")
def proposals_cancel(proposal_id: str, by: By, reason: Reason = "") -> None:
    """Cancel a proposed, approved or scheduled session; one already made is removed at the provider."""
    by = _checked_by(by)
    _decide(proposal_id, f"cancelled by {by}", lambda a: a.cancel(proposal_id, by=by, reason=reason))


@proposals.command("edit")
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

    by = _checked_by(by)

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

    _run(act())


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


@cli.command()
def enrich(
    url: Annotated[str | None, typer.Argument(help="The page to fetch (safely) and read.")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Read this saved page instead of fetching.")] = None,
    page_url: Annotated[str | None, typer.Option("--url", help="The saved page's URL (with --html).")] = None,
) -> None:
    """What the enrich stage makes of a page, as JSON: the article, its main text, topics and author matched
    against the rules file. Exit 1 with the reason when the page is refused or unreadable."""
    import json

    from pipeline.domain.rules import load_rules, rules_bounds
    from pipeline.domain.scoring import Known, respected_author
    from pipeline.enrich.extract import extract
    from pipeline.enrich.stage import TOPIC_TEXT_LIMIT, fetch_policy, topic_scores
    from pipeline.net.fetch import fetch_page

    settings = _settings(quiet=True)
    if html is not None:
        where = page_url or f"https://saved-page.invalid/{html.name}"  # .invalid: reserved, never a real site
        try:
            page_html: str | bytes = html.read_bytes()  # bytes: its encoding is sniffed as a fetched page's is
            final_url = where
        except OSError as error:
            raise ImpromptuError(f"{html}: cannot read: {error.strerror}") from error
    elif url is not None:
        page = _run(fetch_page(url, fetch_policy(settings)))
        page_html, final_url, where = page.html, page.final_url, url
    else:
        raise ImpromptuError("give a URL, or --html FILE [--url URL]")
    extraction = extract(page_html, url=where, final_url=final_url)
    known = Known.of(load_rules(settings.rules_file, rules_bounds(settings)))
    author = respected_author(known, final_url, " ".join(extraction.article.authors))
    result = {
        "article": extraction.article.model_dump(mode="json"),
        "topics": topic_scores(known, extraction.article, extraction.text[:TOPIC_TEXT_LIMIT]),
        "respected_author": author.name if author else None,
        "rules_file": str(settings.rules_file),
        "text": extraction.text,
    }
    print(json.dumps(result, indent=2, ensure_ascii=False))


@cli.command()
def record(
    session_id: str,
    media: Annotated[str, typer.Option(help="The recording: a URL, or a file inside the import folder.")],
    transcript: Annotated[str | None, typer.Option(help="Its WebVTT transcript: a URL or an imported file.")] = None,
    chat: Annotated[str | None, typer.Option(help="Its chat, as text: a URL or an imported file.")] = None,
    by: Annotated[
        str, typer.Option("--by", help="Your login's name, kept in the entry's history (default: your user name).")
    ] = "",
) -> None:
    """Hand a held session's recording to the archive stage (a correction replaces the media, with history).

    A local file is read only from the import folder (IMPROMPTU_RECORDINGS_IMPORT_DIR, default DATA_DIR/import),
    given relative to it or by a path inside it; a URL is fetched by the archive stage's guarded fetcher."""
    import getpass
    import mimetypes

    from pipeline import bus
    from pipeline.archive.keep import check_held
    from pipeline.archive.sources import recording_location
    from pipeline.connect import connected
    from pipeline.messages import Recording, RecordingFile, utc_now
    from pipeline.stores import stored_session

    settings = _settings(quiet=True)
    if by:  # a name given for the entry's history is a login's; without --by, the system user hands it in
        by = _checked_by(by)
    # sound only (an .m4a, a .wav) is kept as audio: the library plays it and the podcast feed offers it
    media_kind = "audio" if (mimetypes.guess_type(media)[0] or "").startswith("audio/") else "video"
    files = [
        RecordingFile(kind=kind, location=recording_location(value, settings))  # type: ignore[arg-type]
        for kind, value in ((media_kind, media), ("transcript", transcript), ("chat", chat))
        if value is not None
    ]

    async def publish() -> Recording:
        async with connected(settings) as broker:
            session = await stored_session(broker, session_id)
            if session is None:
                raise ImpromptuError(f"no scheduled session {session_id!r}: see `impromptu proposals list`")
            await check_held(broker, session, utc_now())  # the archive stage would refuse it: say so now
            recording = Recording.arrived(
                session, source="cli", files=files, submitted_by=by or getpass.getuser() or "cli"
            )
            ack = await bus.publish(broker, bus.RECORDINGS, recording)
        print(f"{recording.id} {'already handed in' if ack.duplicate else 'handed in'}")
        return recording

    _run(publish())
    from pipeline.domain.describe import entry_id_for

    entry_id = entry_id_for(session_id)
    print(f"the archive stage keeps it as {entry_id}: see `impromptu library show {entry_id}`")


@rules_cli.command("check")
def rules_check(file: Path) -> None:
    """Validate a rules file: exit 0 with a summary, or exit 1 with every error as FILE:LINE:COLUMN: field: message."""
    from pipeline.domain.rules import load_rules, rules_bounds
    from pipeline.errors import ConfigError

    try:
        rules = load_rules(file, rules_bounds(load_settings()))  # the bounds the running pipeline applies
    except ConfigError as error:  # one FILE:LINE:COLUMN line per error, nothing else: editors and grep parse it
        print(error, file=sys.stderr)
        raise typer.Exit(1) from None
    idle = "" if rules.rules else " (no rules: nothing will fire)"
    print(
        f"{file}: ok: {len(rules.people)} people, {len(rules.authors)} authors, {len(rules.topics)} topics, "
        f"{len(rules.rules)} rules, {len(rules.facilitators)} facilitators{idle}"
    )


@rules_cli.command("explain")
def rules_explain(
    file: Path,
    share_file: Annotated[Path | None, typer.Option("--share", help="A share as JSON (bus or webhook shape).")] = None,
    url: Annotated[str | None, typer.Option(help="The shared link (instead of --share).")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who shared it (with --url).")] = None,
    text: Annotated[str, typer.Option(help="The post's text (with --url).")] = "",
    network: Annotated[str | None, typer.Option(help="x, mastodon, linkedin or rss (with --url).")] = None,
    at: Annotated[
        datetime | None, typer.Option(help="Judge as if it were this time (quiet hours, share age); default now.")
    ] = None,
) -> None:
    """Would this share fire? The score, each of its terms, and each rule's first failed condition."""
    from pipeline.domain.rules import load_rules, rules_bounds
    from pipeline.domain.scoring import Known
    from pipeline.messages import utc_now
    from pipeline.triggers.explain import explain
    from pipeline.triggers.replay import share_from_cli, share_from_file

    known = Known.of(load_rules(file, rules_bounds(load_settings())))
    now = (at if at.tzinfo else at.replace(tzinfo=UTC)) if at else utc_now()
    if not 1971 <= now.year <= 9000:  # time zones cannot be applied at the ends of the calendar
        raise ImpromptuError(f"--at {now.isoformat()}: give a time between the years 1971 and 9000")
    if share_file is not None:
        share = share_from_file(share_file)
    elif url is not None and by is not None:
        share = share_from_cli(url=url, by=by, text=text, network=network).model_copy(update={"shared_at": now})
    else:
        raise ImpromptuError("give --share SHARE.json, or --url URL --by HANDLE")
    print(explain(known, share, now)[1])


@schemas_cli.command("export")
def schemas_export(
    folder: Annotated[Path, typer.Option(help="Where to write the schema files.")] = Path("schemas"),
) -> None:
    """Write the JSON Schema of every bus message (and the rules file) into FOLDER."""
    from pipeline.app import create_broker
    from pipeline.schema_export import write_schemas

    for path in write_schemas(folder, create_broker):
        print(path)


# --- trace and dead letters (operators) ---

dlq_cli = typer.Typer(no_args_is_help=True, help="Dead letters: list, show, replay, discard (each one recorded).")
cli.add_typer(dlq_cli, name="dlq")


@cli.command()
def trace(
    ident: Annotated[str, typer.Argument(help="Share, correlation, proposal or session id, or the URL.")],
) -> None:
    """One share's journey: every message in stream order, the time between them, and where it stopped and why."""
    from pipeline import bus
    from pipeline.connect import connected
    from pipeline.ops.trace import find_journey, render

    async def show() -> str:
        async with connected(_settings(quiet=True)) as broker:
            return render(await find_journey(bus.jetstream(broker), ident))

    print(_run(show()))


@dlq_cli.command("list")
def dlq_list(
    stage: Annotated[str | None, typer.Option(help="Only this stage's dead letters (trigger, enrich, ...).")] = None,
    every: Annotated[bool, typer.Option("--all", help="Replayed and discarded ones too.")] = False,
) -> None:
    """Waiting dead letters, oldest first: SEQ, time, stage, deliveries, original subject, reason."""
    from pipeline.connect import connected
    from pipeline.ops.dlq import list_dead_letters, render_list

    async def show() -> str:
        async with connected(_settings(quiet=True)) as broker:
            return render_list(await list_dead_letters(broker, stage, every), every)

    print(_run(show()))


@dlq_cli.command("show")
def dlq_show(seq: int) -> None:
    """One dead letter as JSON, with what was done about it."""
    from pipeline.connect import connected
    from pipeline.ops.dlq import get_dead_letter, to_json

    async def show() -> str:
        async with connected(_settings(quiet=True)) as broker:
            return to_json(await get_dead_letter(broker, seq))

    print(_run(show()))


@dlq_cli.command("replay")
def dlq_replay(
    seq: int,
    by: Annotated[
        str | None,
        typer.Option("--by", help="Your login's name, for the record (default: your user name, if a login)."),
    ] = None,
) -> None:
    """Put the original message back on its subject (once; fix the cause first)."""
    import getpass

    from pipeline.connect import connected
    from pipeline.ops.dlq import replay

    who = _checked_by(by or getpass.getuser())

    async def act() -> None:
        async with connected(_settings(quiet=True)) as broker:
            record = await replay(broker, seq, who)
        print(f"{seq} replayed by {who} as {record.replay_msg_id} (seq {record.replay_seq})")

    _run(act())


@dlq_cli.command("discard")
def dlq_discard(
    seq: int,
    by: Annotated[str, typer.Option("--by", help="Your login's name, for the record.")],
    reason: Annotated[str, typer.Option(help="Why, for the record.")],
) -> None:
    """Give up on a dead letter, recording who and why (it stays in the stream)."""
    from pipeline.connect import connected
    from pipeline.ops.dlq import discard

    by = _checked_by(by)

    async def act() -> None:
        async with connected(_settings(quiet=True)) as broker:
            await discard(broker, seq, by, reason)
        print(f"{seq} discarded by {by}: {reason}")

    _run(act())


pages_cli = typer.Typer(no_args_is_help=True, help="Shared pages the enrich stage could not read.")
cli.add_typer(pages_cli, name="pages")


@pages_cli.command("retry")
def pages_retry(
    url: Annotated[str, typer.Argument(help="The shared link whose page could not be read.")],
    by: Annotated[
        str | None,
        typer.Option("--by", help="Your login's name, for the record (default: your user name, if a login)."),
    ] = None,
) -> None:
    """Read a page again that the enrich stage gave up on (a slow or failing server, or a refusal since fixed):
    the link's trigger fires once more under a new id; run twice, it still fires once."""
    import getpass

    from pipeline.connect import connected
    from pipeline.triggers.retry import retry_page

    who = _checked_by(by or getpass.getuser())

    async def act() -> None:
        async with connected(_settings(quiet=True)) as broker:
            done = await retry_page(broker, url, by=who)
        if done.again:
            when = f"{done.at:%Y-%m-%d %H:%M} UTC" if done.at else "earlier"
            print(f"already retried by {done.by} at {when} as {done.trigger.id}: published again (stored once)")
        else:
            failed = f"the page of {done.failed_trigger_id} was not read ({done.reason})"
            print(f"{done.trigger.id} fired again by {who}: {failed}")

    _run(act())


@cli.command()
def status(
    watch: Annotated[bool, typer.Option("--watch", help="Refresh every 2 s until Ctrl-C.")] = False,
    max_age: Annotated[
        float, typer.Option("--max-age", help="Unhealthy when a stage's oldest unacknowledged message is older (s).")
    ] = 300.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of a table.")] = False,
) -> None:
    """Each stage's backlog, acks pending, redeliveries, oldest unacked message, worker and dead letters; the stream.

    Exit 1 when unhealthy (a stage without a live worker, a backlog older than --max-age, dead letters waiting),
    with the reasons."""
    import asyncio
    import json

    from rich.console import Console
    from rich.live import Live

    from pipeline.connect import connected
    from pipeline.ops.status import gather_status, health_problems, render, report_json

    console = Console()
    if not console.is_terminal:  # piped or logged: keep each reason on one line for grep
        console = Console(width=200)

    async def look() -> list[str]:
        async with connected(_settings(quiet=True)) as broker:
            report = await gather_status(broker)
            problems = health_problems(report, max_age)
            if as_json:
                print(json.dumps(report_json(report, problems), default=str))
            elif not watch:
                console.print(render(report, problems))
            else:
                with Live(render(report, problems), console=console, auto_refresh=False) as live:
                    try:
                        while True:
                            await asyncio.sleep(2)
                            report = await gather_status(broker)
                            problems = health_problems(report, max_age)
                            live.update(render(report, problems), refresh=True)
                    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels us; report the last verdict
                        pass
            return problems

    try:
        problems = _run(look())
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if problems:
        raise typer.Exit(1)


@cli.command()
def tail(
    subject: Annotated[str, typer.Option("--subject", help="A NATS subject pattern.")] = ALL_SUBJECTS,
    stage: Annotated[
        str | None, typer.Option("--stage", help="Only what this stage consumes and emits, and its dead letters.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines (the default when not on a terminal).")] = False,
    since: Annotated[str | None, typer.Option("--since", help="Replay from this long ago first: 90s, 10m, 2h.")] = None,
    count: Annotated[int | None, typer.Option("--count", help="Stop after this many messages.")] = None,
) -> None:
    """What flows over the bus, one line per message, from now on (or --since). Never disturbs the stages."""
    from contextlib import aclosing

    from rich.console import Console

    from pipeline import bus
    from pipeline.connect import connected
    from pipeline.messages import utc_now
    from pipeline.ops.tail import ConnectionWatch, TailNotice, parse_since
    from pipeline.ops.tail import tail as tail_bus

    start = utc_now() - parse_since(since) if since else None
    console = Console()
    json_lines = as_json or not console.is_terminal
    notices = Console(stderr=True)  # "reconnecting…": never among the JSON lines on stdout

    async def follow() -> None:
        shown = 0
        watch = ConnectionWatch()  # reconnect for as long as someone watches, saying so
        async with (
            connected(_settings(quiet=True), **watch.options()) as broker,
            # closed before the broker: its subscription must go before the connection drains
            aclosing(tail_bus(bus.jetstream(broker), subject, start, stage, watch)) as lines,
        ):
            async for line in lines:
                if isinstance(line, TailNotice):
                    if notices.is_terminal:
                        notices.print(line.as_text())
                    else:
                        print(line.as_plain(), file=sys.stderr, flush=True)
                    continue
                if json_lines:
                    print(line.as_json(), flush=True)
                else:
                    console.print(line.as_text())
                shown += 1
                if count is not None and shown >= count:
                    return

    if count is not None and count <= 0:
        return
    try:
        _run(follow())
    except KeyboardInterrupt:
        pass


def one_line(error: BaseException) -> str:
    """What went wrong, on one line a user can act on: the field (or option) and what is wrong with it."""
    from pydantic import ValidationError
    from typer._click import exceptions as click  # typer's own copy of click, whose exceptions its commands raise

    if isinstance(error, ValidationError):  # a value the message models refuse: `url: must be an http(s) URL`
        return "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or error.title}: "
            f"{problem['msg'].removeprefix('Value error, ')} (got {_shown(problem.get('input'))})"
            for problem in error.errors(include_url=False)
        )
    if isinstance(error, click.UsageError):  # a missing or malformed argument or option, an unknown command
        where = error.ctx.command_path if error.ctx is not None else "impromptu"
        message = " ".join(error.format_message().split())
        return f"{where}: {message} (see `{where} --help`)"
    if isinstance(error, click.ClickException):
        return " ".join(error.format_message().split())
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    bus = sys.modules.get("pipeline.bus")  # only a command that used the bus can have lost it
    if bus is not None and isinstance(error, bus.NOT_ANSWERING):  # a lost node, a server stopped, a refusal
        return f"{bus.not_answering_reason(error)}; try again: what was stored is not stored twice"
    if isinstance(error, ImpromptuError):
        return " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {' '.join(str(error).split())} (IMPROMPTU_DEBUG=1 shows the traceback)"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def main() -> None:
    """The `impromptu` command: every refusal is one line `error: …` on stderr and exit 1, never a traceback
    (IMPROMPTU_DEBUG=1 lets an unexpected one through); Ctrl-C exits 130."""
    import os

    from typer._click import exceptions as click

    try:
        code = cli(prog_name="impromptu", standalone_mode=False)
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.Abort:  # Ctrl-C or end of input at a prompt
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    except click.NoArgsIsHelpError:  # `impromptu proposals` alone: its help is shown, which is what was asked
        sys.exit(0)
    except Exception as error:
        if os.environ.get("IMPROMPTU_DEBUG") and not isinstance(error, (ImpromptuError, click.ClickException)):
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
