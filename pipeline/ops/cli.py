"""`impromptu trace`, `dlq`, `status` and `tail`: the operator's tools."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli_support import checked_by, command_settings, run_async

if TYPE_CHECKING:  # imported where used: `--help` loads no bus
    pass

ALL_SUBJECTS = "impromptu.>"  # bus.ALL_SUBJECTS, spelled here so that `tail --help` needs no bus
dlq_cli = typer.Typer(no_args_is_help=True, help="Dead letters: list, show, replay, discard (each one recorded).")


def trace(
    ident: Annotated[str, typer.Argument(help="Share, correlation, proposal or session id, or the URL.")],
) -> None:
    """One share's journey: every message in stream order, the time between them, and where it stopped and why."""
    from pipeline import bus
    from pipeline.connect import connected
    from pipeline.ops.trace import find_journey, render

    async def show() -> str:
        async with connected(command_settings(quiet=True)) as broker:
            return render(await find_journey(bus.jetstream(broker), ident))

    print(run_async(show()))


@dlq_cli.command("list")
def dlq_list(
    stage: Annotated[str | None, typer.Option(help="Only this stage's dead letters (trigger, enrich, ...).")] = None,
    every: Annotated[bool, typer.Option("--all", help="Replayed and discarded ones too.")] = False,
) -> None:
    """Waiting dead letters, oldest first: SEQ, time, stage, deliveries, original subject, reason."""
    from pipeline.connect import connected
    from pipeline.ops.dlq import list_dead_letters, render_list

    async def show() -> str:
        async with connected(command_settings(quiet=True)) as broker:
            return render_list(await list_dead_letters(broker, stage, every), every)

    print(run_async(show()))


@dlq_cli.command("show")
def dlq_show(seq: int) -> None:
    """One dead letter as JSON, with what was done about it."""
    from pipeline.connect import connected
    from pipeline.ops.dlq import get_dead_letter, to_json

    async def show() -> str:
        async with connected(command_settings(quiet=True)) as broker:
            return to_json(await get_dead_letter(broker, seq))

    print(run_async(show()))


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

    who = checked_by(by or getpass.getuser())

    async def act() -> None:
        async with connected(command_settings(quiet=True)) as broker:
            record = await replay(broker, seq, who)
        print(f"{seq} replayed by {who} as {record.replay_msg_id} (seq {record.replay_seq})")

    run_async(act())


@dlq_cli.command("discard")
def dlq_discard(
    seq: int,
    by: Annotated[str, typer.Option("--by", help="Your login's name, for the record.")],
    reason: Annotated[str, typer.Option(help="Why, for the record.")],
) -> None:
    """Give up on a dead letter, recording who and why (it stays in the stream)."""
    from pipeline.connect import connected
    from pipeline.ops.dlq import discard

    by = checked_by(by)

    async def act() -> None:
        async with connected(command_settings(quiet=True)) as broker:
            await discard(broker, seq, by, reason)
        print(f"{seq} discarded by {by}: {reason}")

    run_async(act())


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
        async with connected(command_settings(quiet=True)) as broker:
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
        problems = run_async(look())
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if problems:
        raise typer.Exit(1)


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
            connected(command_settings(quiet=True), **watch.options()) as broker,
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
        run_async(follow())
    except KeyboardInterrupt:
        pass
