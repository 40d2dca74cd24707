"""Rules files: errors that point at FILE:LINE:COLUMN and the field, cross-field checks, defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.domain.rules import Rules, load_rules
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", [ROOT / "pipeline/triggers/default_rules.yaml", ROOT / "examples/rules.yaml"])
def test_shipped_rules_files_are_valid(path: Path) -> None:
    rules = load_rules(path)
    assert rules.people and rules.rules


def test_a_ten_line_file_works_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "people:\n  - {name: Mark Britz, x: britz}\ntopics:\n  leadership: [leadership]\n"
        "rules:\n  - name: lead\n    when: {topics_any: [leadership]}\n",
        encoding="utf-8",
    )
    rules = load_rules(path)
    assert rules.people[0].x == ["britz"] and rules.people[0].trust == 0.8
    assert rules.topics["leadership"].keywords == ["leadership"]
    assert rules.plan(rules.rules[0]).lead_minutes == 30  # the seed's "30 minutes out"
    assert rules.rules[0].when.min_score == 0.5 and rules.rules[0].when.exclude_replies


# --- rules-file errors ------------------------------------------------------------------------------------


def load_error(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    return path, str(caught.value)


VALID_HEAD = """\
people:
  - name: A
    x: ["@a"]
"""


def test_unknown_key_points_at_the_key(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, VALID_HEAD + "    colour: red\ntopics: {}\n")
    assert message == f"{path}:4:5: people.0.colour: Extra inputs are not permitted"


def test_a_channel_without_an_adapter_is_refused_where_it_is_named(tmp_path: Path) -> None:
    text = "topics: {}\nrules:\n  - name: r\n    session:\n      channels: [x, myspace]\n"
    path, message = load_error(tmp_path, text)
    assert message.startswith(f"{path}:5:21: rules.0.session.channels.1: Input should be 'x', 'linkedin',")
    assert message.endswith("'teams' or 'email'")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, "topics: {}\nbogus: 1\n")
    assert message == f"{path}:2:1: bogus: Extra inputs are not permitted"


def test_trust_out_of_range_points_at_its_line(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, VALID_HEAD + "    trust: 1.5\n")
    assert message == f"{path}:4:12: people.0.trust: Input should be less than or equal to 1"


def test_nested_field_error_points_at_its_line(tmp_path: Path) -> None:
    text = "topics:\n  t: [x]\nrules:\n  - name: r\n    when: {topics_any: [t]}\n    session:\n      lead_minutes: -1\n"
    path, message = load_error(tmp_path, text)
    assert message.startswith(f"{path}:7:21: rules.0.session.lead_minutes: ")  # at the value


def test_every_error_is_reported_one_per_line(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, VALID_HEAD + "    trust: 1.5\n    colour: red\n")
    lines = message.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}:4:") and "people.0.trust" in lines[0]
    assert lines[1].startswith(f"{path}:5:") and "people.0.colour" in lines[1]


UNKNOWN_TOPIC = "topics:\n  t: [x]\nrules:\n  - name: r\n    when:\n      topics_any: [nope]\n"


def test_rule_naming_unknown_topic_is_refused(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, UNKNOWN_TOPIC)
    assert message.startswith(f"{path}:")
    assert "rule 'r' names unknown topic 'nope' (known: t)" in message


def test_rule_naming_unknown_topic_points_at_the_rule(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, UNKNOWN_TOPIC)
    assert message == f"{path}:6:20: rules.0.when.topics_any.0: rule 'r' names unknown topic 'nope' (known: t)"


def test_yaml_syntax_error_reports_a_line(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, "topics:\n  t: [x\nrules: 1\n")
    assert message.startswith(f"{path}:3:6: <yaml>: ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match=r"absent\.yaml:1:1: <file>: cannot read"):
        load_rules(path)


def test_empty_file_is_empty_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("# nothing yet\n", encoding="utf-8")
    assert load_rules(path) == Rules()


def test_error_location_when_a_key_repeats_the_last_part(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, "topics:\n  leadership: [a]\n  topics: 5\n")
    assert message.startswith(f"{path}:3:11: topics.topics: ")


def test_errors_read_top_to_bottom_and_suggest_a_time_zone(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, VALID_HEAD + "    trust: 1.5\ntimezone: Europe/Londn\n")
    assert message.splitlines() == [
        f"{path}:4:12: people.0.trust: Input should be less than or equal to 1",
        f"{path}:5:11: timezone: unknown time zone 'Europe/Londn' (did you mean Europe/London, Europe/Lisbon, "
        "Europe/Vienna?)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("people:\n  - {name: A, x: a}\n  - {name: B, x: '@A'}\n", "people.1.x.0: '@A' is already 'A''s x handle"),
        ("people:\n  - {name: A}\n", "people.0: 'A' has no handle"),
        ("people:\n  - {name: A, mastodon: britz}\n", "people.0.mastodon: 'britz' is not user@instance"),
        ("people:\n  - {name: A, x: a, trusted_on: [nope]}\n", "people.0.trusted_on.0: 'A' names unknown topic"),
        ("rules:\n  - {name: r}\n  - {name: r}\n", "rules.1.name: rule name 'r' is already used by rules[0]"),
        (
            "facilitators: [{name: Ana}]\nrules:\n  - {name: r, session: {facilitators: [Bob]}}\n",
            "unknown facilitator 'Bob'",
        ),
        ("quiet_hours: {start: '25:00', end: '07:00'}\n", "quiet_hours.start: "),
        ("scoring: {sharers: 0, author: 0, topic: 0, crowd: 0}\n", "scoring: at least one weight must be above 0"),
    ],
)
def test_cross_field_and_value_errors_name_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path, message = load_error(tmp_path, text)
    assert message.startswith(f"{path}:") and expected in message, message
