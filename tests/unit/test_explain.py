"""`impromptu rules explain`: whether a share would fire, the score term by term, each rule's first failed check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import cli

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "rules.yaml")
NOON = "2026-03-04T12:00:00+00:00"  # outside the example's quiet hours


def explain(*args: str) -> str:
    result = CliRunner().invoke(cli, ["rules", "explain", EXAMPLE, *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_seed_share_fires_and_every_term_is_shown() -> None:
    out = explain(
        "--url", "https://joshbersin.com/a?utm_source=x", "--by", "@britz", "--text", "on leadership", "--at", NOON
    )
    lines = out.splitlines()
    assert lines[0] == "would fire: rule leadership-from-the-network (score 0.82)"
    assert "link:    https://joshbersin.com/a" in lines
    assert "author:  Josh Bersin (respect 0.90)" in lines
    assert "  + leadership-from-the-network: fires" in lines
    assert "      score sharers 0.90x0.6 + author 0.90x0.2 + topic 1.00x0.1 + crowd 0.00x0.1 -> 0.82" in lines
    assert "  = two-colleagues-agree: would pass too, but leadership-from-the-network comes first" in lines


def test_a_stranger_is_told_which_condition_failed() -> None:
    out = explain("--url", "https://example.com/a", "--by", "@stranger", "--text", "leadership", "--at", NOON)
    assert out.startswith("would not fire\n")
    assert "  - leadership-from-the-network: first failed condition require_trusted_sharer: " in out
    assert "@stranger is not in the trusted network" in out


def test_quiet_hours_in_the_rules_time_zone() -> None:
    out = explain(
        "--url",
        "https://joshbersin.com/a",
        "--by",
        "@britz",
        "--text",
        "leadership",
        "--at",
        "2026-03-04T23:30:00+00:00",
    )
    assert "first failed condition quiet_hours: 23:30 Europe/London is in quiet hours 22:00-07:00" in out


def test_a_share_file_in_the_webhook_shape(tmp_path: Path) -> None:
    share = tmp_path / "share.json"
    share.write_text(
        json.dumps({"url": "https://joshbersin.com/a", "by": "janehart", "text": "bitcoin", "network": "x"})
    )
    out = explain("--share", str(share), "--at", NOON)
    assert "sharers: Jane Hart (janehart) trust 0.00" in out
    assert "Jane Hart 0.00: trusted, but not on crypto" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --share SHARE.json, or --url URL --by HANDLE"),
        (["--url", "ftp://x", "--by", "@a"], "--url: "),
    ],
)
def test_bad_input_is_an_error_not_a_traceback(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["rules", "explain", EXAMPLE, *args])
    assert result.exit_code == 1
    assert message in str(result.exception)
