"""`impromptu share`, `replay`, `rules` and `pages`: shares in by hand, rules files, pages to read again."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli_support import checked_by, command_settings, load_settings, run_async
from pipeline.errors import ImpromptuError

if TYPE_CHECKING:  # imported where used: `--help` loads no bus
    pass

rules_cli = typer.Typer(no_args_is_help=True, help="Trigger rules files.")
pages_cli = typer.Typer(no_args_is_help=True, help="Shared pages the enrich stage could not read.")


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
        async with connected(command_settings(quiet=True)) as broker:
            ack = await bus.publish(broker, bus.SHARES, message)
        print(f"{message.id} {'already on the bus' if ack.duplicate else 'published'} (seq {ack.seq})")

    run_async(publish())


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
        async with connected(command_settings(quiet=True)) as broker:
            with progress_bar(len(parsed.shares), f"replaying {file.name}") as advance:
                return await publish_shares(broker, parsed.shares, advance)

    count = run_async(publish()) if parsed.shares else ReplayCount()
    invalid = len({error.line for error in parsed.errors})
    print(f"{file}: {count.new} published, {count.duplicates} already on the bus, {invalid} invalid line(s)")
    if parsed.errors:
        raise typer.Exit(1)


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

    who = checked_by(by or getpass.getuser())

    async def act() -> None:
        async with connected(command_settings(quiet=True)) as broker:
            done = await retry_page(broker, url, by=who)
        if done.again:
            when = f"{done.at:%Y-%m-%d %H:%M} UTC" if done.at else "earlier"
            print(f"already retried by {done.by} at {when} as {done.trigger.id}: published again (stored once)")
        else:
            failed = f"the page of {done.failed_trigger_id} was not read ({done.reason})"
            print(f"{done.trigger.id} fired again by {who}: {failed}")

    run_async(act())
