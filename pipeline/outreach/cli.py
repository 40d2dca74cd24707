"""`impromptu render`, `impromptu channels`, `impromptu outreach` and `impromptu linkedin`: the outreach tools."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli_support import command_settings, run_async
from pipeline.errors import ConfigError

if TYPE_CHECKING:  # imported where used: `impromptu channels --help` loads no bus and no templates
    from pipeline.messages import SessionProposal
    from pipeline.settings import Settings

channels_cli = typer.Typer(no_args_is_help=True, help="Outreach channels: which are ready, disabled or broken.")
outreach_cli = typer.Typer(no_args_is_help=True, help="Announcements: what was posted, and posts a person must check.")
linkedin_cli = typer.Typer(no_args_is_help=True, help="Connect a LinkedIn account (OAuth 2) for posting.")


def render_command(
    channel: Annotated[
        str, typer.Option("--channel", help="A channel: x, mastodon, slack... (`impromptu channels list`).")
    ],
    proposal_id: Annotated[str | None, typer.Option("--proposal", help="A proposal on the bus.")] = None,
    sample: Annotated[bool, typer.Option("--sample", help="The seed story's session; needs no bus.")] = False,
    kind: Annotated[str, typer.Option(help="Which announcement: scheduled, starting, recording or cancelled.")] = (
        "scheduled"
    ),
) -> None:
    """Preview one channel's announcement exactly as it would be posted (nothing is posted)."""
    from typing import get_args

    from pipeline.messages import AnnouncementKind

    if kind not in get_args(AnnouncementKind):  # checked here: the message models are not loaded for --help
        raise ConfigError(f"--kind {kind!r}: choose {', '.join(get_args(AnnouncementKind))}")
    from pipeline.channels.render import environment, render, weighted_length
    from pipeline.domain.sessions import preview_session
    from pipeline.outreach.sample import sample_session

    settings = command_settings(quiet=True)
    if sample == (proposal_id is not None):
        raise ConfigError("give either --proposal ID or --sample")
    if proposal_id is None:
        session = sample_session(settings)
    else:
        session = preview_session(run_async(_proposal(settings, proposal_id)), settings)
    text = render(
        environment(settings.outreach_templates_dir),
        channel,
        kind,  # one of AnnouncementKind, checked above
        session,
        library_url=f"{settings.base_url}/library/entry-sample" if kind == "recording" else None,
        tagline=session.proposal.title if kind == "recording" else None,
        reason="(the reason a facilitator gives)" if kind == "cancelled" else "",
    )
    print(text)
    print(f"\n[{channel} {kind}: {weighted_length(channel, text)} characters as {channel} counts them]")


async def _proposal(settings: Settings, proposal_id: str) -> SessionProposal:
    from pipeline.connect import connected
    from pipeline.domain.approval import get_record

    async with connected(settings) as broker:
        return (await get_record(broker, proposal_id)).proposal


@channels_cli.command("list")
def channels_list() -> None:
    """Each channel: ready (posting, or to the outbox in a dry run), disabled (what to set) or broken (why)."""
    from pipeline.channels.registry import build_channels

    settings = command_settings(quiet=True)
    built = build_channels(settings, warn=False)
    broken: dict[str, str] = {}
    if settings.nats_url or settings.embedded_url_file.exists():
        try:
            broken = run_async(_broken(settings))
        except ConfigError as error:  # settings still say what each channel needs; only the broken marks are unknown
            print(f"(whether a channel is broken is unknown: {error})")
    for name in sorted({*built.ready, *built.disabled}):
        if name in broken:
            state = f"BROKEN: {broken[name]}"
        elif name in built.disabled:
            state = f"disabled: set {', '.join(built.disabled[name])}"
        else:
            state = "ready (dry run: writes to the outbox)" if built.dry_run else "ready"
        print(f"{name:<9} {state}")


async def _broken(settings: Settings) -> dict[str, str]:
    from pipeline import stores
    from pipeline.connect import connected
    from pipeline.outreach import health

    async with connected(settings) as broker:
        kv = await stores.bucket(broker, stores.OUTREACH)
        return {sick.channel: sick.reason for sick in await health.all_broken(kv)}


@channels_cli.command("reset")
def channels_reset(name: str) -> None:
    """Post on NAME again once its settings are fixed (then replay its dead letters)."""
    from pipeline.connect import connected
    from pipeline.outreach.operations import reset_channel

    async def act() -> str:
        async with connected(command_settings(quiet=True)) as broker:
            return await reset_channel(broker, name)

    print(run_async(act()))


@outreach_cli.command("list")
def outreach_list(
    session: Annotated[str | None, typer.Option("--session", help="Only this session's posts.")] = None,
    unknown: Annotated[bool, typer.Option("--unknown", help="Only posts a person must check.")] = False,
) -> None:
    """Every post record: KEY (session.channel.kind), state, where, why."""
    from pipeline import stores
    from pipeline.channels import records
    from pipeline.connect import connected

    async def read() -> dict[str, records.PostRecord]:
        async with connected(command_settings(quiet=True)) as broker:
            kv = await stores.bucket(broker, stores.OUTREACH)
            return await (records.records_of(kv, session) if session else records.all_records(kv))

    for key, record in sorted(run_async(read()).items()):
        if unknown and record.state != "unknown":
            continue
        where = f" {record.location}" if record.location else ""
        why = f"  ({record.reason})" if record.reason else ""
        print(f"{key}  {record.state}{where}{why}")


@outreach_cli.command("resolve")
def outreach_resolve(
    key: str,
    posted: Annotated[str | None, typer.Option("--posted", help="It went out: where it can be seen.")] = None,
    not_posted: Annotated[bool, typer.Option("--not-posted", help="It did not go out: post it now.")] = False,
) -> None:
    """Settle a post whose outcome is unknown, after checking the channel yourself."""
    from pipeline.connect import connected
    from pipeline.outreach.operations import resolve_post

    if (posted is None) == (not not_posted):
        raise ConfigError("say either --posted URL or --not-posted")

    async def act() -> str:
        async with connected(command_settings(quiet=True)) as broker:
            return await resolve_post(broker, key, posted_at=posted)

    print(run_async(act()))


@linkedin_cli.command("login")
def linkedin_login() -> None:
    """Print the address where the LinkedIn account owner allows Impromptu to post."""
    import secrets

    from pipeline.channels.linkedin import authorization_url

    state = secrets.token_urlsafe(16)
    print(authorization_url(command_settings(quiet=True), state))
    print(f"\nAfter allowing, LinkedIn redirects with ?code=…&state=…: check that state is {state},")
    print("then run: impromptu linkedin token CODE")


@linkedin_cli.command("token")
def linkedin_token(code: str) -> None:
    """Exchange the code for a token and find the author; prints the two settings to keep (once)."""
    from pipeline.channels.linkedin import author_urn, exchange_code

    settings = command_settings(quiet=True)
    token, expires_in = exchange_code(settings, code)
    author = run_async(author_urn(token, settings.linkedin_api_url))
    print(f"IMPROMPTU_LINKEDIN_ACCESS_TOKEN={token}")
    print(f"IMPROMPTU_LINKEDIN_AUTHOR={author}")
    print(f"# the token lasts {expires_in // 86400} days: run `impromptu linkedin login` again before then")
