"""`impromptu replay FILE.jsonl`: put shares from a file on the bus, and read one share for `rules explain`.

Each line of a replay file is a whole `Share` as it was on the bus, or a sender's body as the webhook takes it
(`{"url": ..., "by": ...}`); blank lines and `#` comments are skipped. Parsing is plain functions: every bad
line is reported as `FILE:LINE: field: message` and none of them is published. Ids are stable (a bus share
keeps its own; a body's derives from its `id`, or its url + sharer), so JetStream drops every share a second
run of the same file publishes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from faststream.nats import NatsBroker
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from pipeline import bus
from pipeline.errors import ImpromptuError
from pipeline.messages import Share
from pipeline.triggers.share_body import InvalidShare, ShareBody, problems_of, share_from_json

SOURCE = "replay"


@dataclass(frozen=True)
class LineError:
    path: Path
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.field}: {self.message}"


@dataclass(frozen=True)
class ReplayFile:
    path: Path
    shares: list[Share] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)


@dataclass
class ReplayCount:
    new: int = 0
    duplicates: int = 0


def is_skipped(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def parse_line(line: str) -> Share:
    """One line's share; raises InvalidShare (and nothing else) when the line is not one."""
    return share_from_json(line, SOURCE)


def split_lines(data: bytes) -> Iterator[tuple[int, str | UnicodeDecodeError]]:
    """(line number, text) for each line; split on LF only, so numbers match what an editor shows."""
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            # a byte-order mark is only legitimate before the first line
            yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8").removesuffix("\r")
        except UnicodeDecodeError as error:
            yield number, error


def parse_replay(path: Path, data: bytes) -> ReplayFile:
    """Every share in a replay file's contents, and every reason a line is not one."""
    parsed = ReplayFile(path)
    for number, text in split_lines(data):
        if isinstance(text, UnicodeDecodeError):
            parsed.errors.append(LineError(path, number, "<line>", f"not UTF-8 text: {text.reason}"))
        elif not is_skipped(text):
            try:
                parsed.shares.append(parse_line(text))
            except InvalidShare as invalid:
                parsed.errors.extend(LineError(path, number, p.field, p.message) for p in invalid.problems)
    return parsed


def read_replay_file(path: Path) -> ReplayFile:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImpromptuError(f"{path}: cannot read: {error.strerror}") from error
    return parse_replay(path, data)


async def publish_shares(
    broker: NatsBroker, shares: Iterable[Share], on_published: Callable[[], None] = lambda: None
) -> ReplayCount:
    """Publish in file order, each awaited until JetStream acknowledges it (or reports it a duplicate)."""
    count = ReplayCount()
    for share in shares:
        ack = await bus.publish(broker, bus.SHARES, share)
        if ack.duplicate:
            count.duplicates += 1
        else:
            count.new += 1
        on_published()
    return count


@contextmanager
def progress_bar(total: int, description: str) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr when it is a terminal (silent otherwise); yields the "one more done" callback."""
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)


def share_from_file(path: Path) -> Share:
    """One share from a JSON file (bus or webhook shape), for `rules explain --share`."""
    try:
        return share_from_json(path.read_bytes(), SOURCE)
    except OSError as error:
        raise ImpromptuError(f"{path}: cannot read: {error.strerror}") from error
    except InvalidShare as invalid:
        raise ImpromptuError("\n".join(f"{path}: {p.field}: {p.message}" for p in invalid.problems)) from None


def share_from_cli(*, url: str, by: str, text: str = "", network: str | None = None) -> Share:
    """A share from command-line options, with the same id `impromptu share` would give it."""
    try:
        body = ShareBody.model_validate({"url": url, "by": by, "text": text, "network": network})
    except ValidationError as error:
        raise ImpromptuError("; ".join(f"--{p.field}: {p.message}" for p in problems_of(error))) from None
    return body.to_share("cli")
