"""Every command of `impromptu`, given bad input, says what is wrong on one line and exits 1: never a traceback,
never a usage box. The commands are enumerated from the Typer app itself, so a new command is covered at once."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import typer.main

from pipeline.cli import cli
from pipeline.settings import Settings

CHECKOUT = Path(__file__).resolve().parents[2]
ENTRY = "from pipeline.cli import main; main()"


Command = Any  # typer's own (vendored) click.Command


def leaf_commands() -> list[tuple[list[str], Command]]:
    """(path, command) of every command that runs something, e.g. (["proposals", "list"], …)."""
    found: list[tuple[list[str], Command]] = []

    def walk(command: Command, path: list[str]) -> None:
        if hasattr(command, "commands"):  # a group: its sub-commands
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
        else:
            found.append((path, command))

    walk(typer.main.get_command(cli), [])
    return found


def fillers(command: Command) -> list[str]:
    """Well-formed values for the required parameters, so that parsing reaches the parameter under test."""
    args: list[str] = []
    for param in command.params:
        if param.required and param.param_type_name == "argument":
            args.append("x")
        elif param.required and param.param_type_name == "option":
            args += [param.opts[0], "x"]
    return args


def malformed_invocations() -> list[list[str]]:
    """An unknown option for every command, and a word where every number or date is expected."""
    runs: list[list[str]] = []
    for path, command in leaf_commands():
        runs.append([*path, "--no-such-option"])
        for param in command.params:
            typed = param.type_descriptor.annotation  # what the function declared: int, float, datetime, str, …
            if param.param_type_name == "option" and typed in {int, float, datetime}:
                runs.append([*path, *fillers(command), param.opts[0], "soon"])
    return runs


def env_for(settings: Settings | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_") and k != "NATS_URL"}
    env["PYTHONPATH"] = str(CHECKOUT)
    if settings is not None:
        env.update(NATS_URL=settings.nats_url or "", IMPROMPTU_DATA_DIR=str(settings.data_dir))
        env["IMPROMPTU_FACILITATOR_LOGINS"] = '{"ana": {}}'
    else:
        env["NATS_URL"] = "nats://127.0.0.1:1"  # nothing may get as far as the bus
    return env


def assert_one_clear_line(argv: list[str], code: int, stdout: str, stderr: str) -> None:
    shown = f"impromptu {' '.join(argv)}\nexit {code}\nstdout: {stdout}\nstderr: {stderr}"
    assert "Traceback" not in stdout + stderr, shown
    assert code == 1, shown
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), shown


def test_every_command_refuses_malformed_arguments_on_one_line(tmp_path: Path) -> None:
    runs = malformed_invocations()
    assert len({tuple(run[:2]) for run in runs}) >= 40  # the whole tree was walked, sub-apps included
    # one interpreter runs the real entry point for each argv (a process each would take minutes on a small box)
    driver = textwrap.dedent(
        """
        import contextlib, io, json, sys
        from pipeline.cli import main
        results = []
        for argv in json.loads(sys.argv[1]):
            out, err = io.StringIO(), io.StringIO()
            sys.argv = ["impromptu", *argv]
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    main()
                    code = 0
                except SystemExit as exit:
                    code = exit.code if isinstance(exit.code, int) else 1
            results.append([argv, code, out.getvalue(), err.getvalue()])
        print(json.dumps(results))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", driver, json.dumps(runs)],
        cwd=CHECKOUT,
        env={**env_for(None), "IMPROMPTU_DATA_DIR": str(tmp_path), "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert len(results) == len(runs)
    for argv, code, stdout, stderr in results:
        assert_one_clear_line(argv, code, stdout, stderr)
    unknown = next(r for r in results if r[0] == ["proposals", "list", "--no-such-option"])
    assert unknown[3].strip() == (
        "error: impromptu proposals list: No such option: --no-such-option (see `impromptu proposals list --help`)"
    )


# What a new user types wrong, command by command; each reaches the command itself (a real bus where it needs one).
MISTAKES: list[tuple[list[str], str]] = [
    (["share", "not-a-url", "--by", "@ana"], "error: url: must be an http:// or https:// URL (got 'not-a-url')"),
    (["share", "ftp://example.com/a", "--by", "@ana"], "url: must be an http:// or https:// URL"),
    (["proposals", "list", "--state", "bogus"], "--state 'bogus' is not a state; the states are: proposed, approved"),
    (["proposals", "show", "no-such-proposal"], "no-such-proposal"),
    (["render", "--channel", "x", "--sample", "--kind", "bogus"], "--kind 'bogus': choose scheduled"),
    (["render", "--channel", "nosuch", "--sample"], "nosuch"),
    (["rules", "explain", "no-such-rules.yaml", "--url", "ftp://x", "--by", "@a"], "no-such-rules.yaml"),
    (["replay", "no-such-file.jsonl"], "no-such-file.jsonl"),
    (["tail", "--since", "forever"], "forever"),
    (["library", "show", "no-such-entry"], "no-such-entry"),
    (["dlq", "show", "999999"], "999999"),
    (["record", "no-such-session", "--media", "talk.mp4"], "talk.mp4: no such file in the import folder"),
]


@pytest.mark.nats
@pytest.mark.parametrize(("argv", "said"), MISTAKES, ids=[" ".join(m[0][:2]) for m in MISTAKES])
def test_a_bad_value_is_refused_on_one_line_naming_it(settings: Settings, argv: list[str], said: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", ENTRY, *argv],
        cwd=CHECKOUT,
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_clear_line(argv, done.returncode, done.stdout, done.stderr)
    assert said in done.stderr


def test_the_password_length_is_checked_before_the_confirmation(tmp_path: Path) -> None:
    """A too-short password is refused at once; the confirmation prompt is never shown. Typed at a terminal (a
    pseudo-terminal the command owns, as a person's shell gives it), where the prompt reads from /dev/tty."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal, stdin, stdout and stderr
        os.chdir(CHECKOUT)
        os.execve(
            sys.executable,
            [sys.executable, "-c", ENTRY, "facilitators", "add", "ana"],
            {**env_for(None), "IMPROMPTU_DATA_DIR": str(tmp_path)},
        )
    seen = b""
    deadline = time.monotonic() + 60
    answered = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([terminal], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # the child is gone: the terminal is closed
            break
        if not chunk:
            break
        seen += chunk
        # click prints "Password:", then getpass turns echo off (flushing what was typed) and prompts " "
        if not answered and b"Password: " in seen:
            os.write(terminal, b"short\n")
            answered = True
        if answered and b"repeat" in seen.lower():  # the old order: a second prompt before the refusal
            break
    ended, status = os.waitpid(pid, os.WNOHANG)
    for _ in range(50):  # a child that closed its terminal is exiting: give it the moment it needs
        if ended:
            break
        time.sleep(0.1)
        ended, status = os.waitpid(pid, os.WNOHANG)
    if ended == 0:  # still waiting for input: stop it, the checks below say why
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    os.close(terminal)
    shown = seen.decode(errors="replace").replace("\r\n", "\n")
    lines = [line for line in shown.splitlines() if line.strip() and not line.startswith("Password")]
    assert answered, shown
    assert "Traceback" not in shown, shown
    assert os.waitstatus_to_exitcode(status) == 1, shown
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    assert "at least 10 characters" in lines[0]
    assert "repeat" not in shown.lower() and "confirm" not in shown.lower(), shown
    assert not (tmp_path / "facilitators.json").exists()
