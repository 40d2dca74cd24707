"""The `impromptu` command: run the pipeline, the demo, and the facilitator's and operator's tools.

This module assembles the command from each package's own `cli.py` (actions, triggers, enrich, outreach, archive,
ops) and keeps the commands of the whole: `run`, `demo`, `schemas`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline.actions.cli import facilitators_cli, proposals_cli
from pipeline.archive.cli import library_cli, record
from pipeline.cli_support import command_settings, load_settings, run_async
from pipeline.enrich.cli import enrich
from pipeline.errors import ImpromptuError
from pipeline.ops.cli import dlq_cli, status, tail, trace
from pipeline.outreach.cli import channels_cli, linkedin_cli, outreach_cli, render_command
from pipeline.triggers.cli import pages_cli, replay, rules_cli, share

# Start-up: this module and the packages' command modules import only typer and light modules at the top; each
# command imports what it uses (faststream, the stages, trafilatura, jinja, botocore), so `--help` and the light
# commands start fast. tests/unit/test_cli_startup.py checks it; bench/cli_start.py measures it.

cli = typer.Typer(
    no_args_is_help=True, add_completion=False, help=__doc__.split("\n\n")[0], pretty_exceptions_enable=False
)
schemas_cli = typer.Typer(no_args_is_help=True, help="JSON Schema of every message.")
cli.add_typer(proposals_cli, name="proposals")
cli.add_typer(facilitators_cli, name="facilitators")
cli.add_typer(library_cli, name="library")
cli.add_typer(rules_cli, name="rules")
cli.add_typer(schemas_cli, name="schemas")
cli.add_typer(channels_cli, name="channels")
cli.add_typer(outreach_cli, name="outreach")
cli.add_typer(linkedin_cli, name="linkedin")
cli.command("render")(render_command)


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

    settings = command_settings()
    if stages is not None:
        try:
            settings = settings.model_copy(update={"stages": parse_stages(stages)})
        except ValueError as error:
            raise ImpromptuError(f"--stages {stages}: {error}") from None
    try:
        run_async(serve(settings))
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
        run_async(run_demo(settings, serve=serve))


cli.command()(share)
cli.command()(replay)
cli.command()(enrich)
cli.command()(record)


@schemas_cli.command("export")
def schemas_export(
    folder: Annotated[Path, typer.Option(help="Where to write the schema files.")] = Path("schemas"),
) -> None:
    """Write the JSON Schema of every bus message (and the rules file) into FOLDER."""
    from pipeline.app import create_broker
    from pipeline.schema_export import write_schemas

    for path in write_schemas(folder, create_broker):
        print(path)


cli.add_typer(dlq_cli, name="dlq")
cli.command()(trace)
cli.add_typer(pages_cli, name="pages")
cli.command()(status)
cli.command()(tail)


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
