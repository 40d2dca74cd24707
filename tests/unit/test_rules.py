"""Trigger rules: who fires, why not, and rules-file errors that point at FILE:LINE:COLUMN."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.messages import Share
from pipeline.triggers.rules import Rules, evaluate, load_rules, matching_topics

DEFAULT_RULES = Path(__file__).resolve().parents[2] / "pipeline" / "triggers" / "default_rules.yaml"


def share(sharer: str, text: str) -> Share:
    return Share.from_source(
        source="x", native_id="1", sharer=sharer, text=text, url="https://www.linkedin.com/pulse/x"
    )


@pytest.fixture(scope="module")
def rules() -> Rules:
    return load_rules(DEFAULT_RULES)


# --- evaluation -------------------------------------------------------------------------------------------


def test_trusted_sharer_on_topic_fires_with_trust_as_score(rules: Rules) -> None:
    verdict = evaluate(rules, share("@britz", "Why eLearning isn't working for leadership"))
    assert verdict.fired
    assert verdict.score == 0.9
    assert verdict.rule is not None and verdict.rule.name == "trusted-share-on-leadership-or-learning"
    assert verdict.topics == ["leadership", "learning"]


def test_unknown_sharer_does_not_fire_and_says_why(rules: Rules) -> None:
    verdict = evaluate(rules, share("@nobody", "leadership and training"))
    assert not verdict.fired
    assert verdict.rule is None
    assert verdict.reasons == ["@nobody is not in the trusted network"]


def test_trusted_sharer_off_topic_does_not_fire(rules: Rules) -> None:
    verdict = evaluate(rules, share("@britz", "pictures of my cat"))
    assert not verdict.fired
    assert verdict.topics == []
    assert any("no topic" in reason for reason in verdict.reasons)


def test_min_score_above_trust_blocks() -> None:
    strict = Rules.model_validate(
        {
            "trusted_people": [{"name": "Low", "handles": ["@low"], "trust": 0.4}],
            "topics": {"leadership": ["leadership"]},
            "rules": [{"name": "picky", "topics_any": ["leadership"], "min_score": 0.5}],
        }
    )
    verdict = evaluate(strict, share("@low", "leadership"))
    assert not verdict.fired
    assert verdict.score == 0.4
    assert any("below 0.50" in reason for reason in verdict.reasons)


@pytest.mark.parametrize("handle", ["britz", "BRITZ", "@Britz", "  @britz "])
def test_handle_matching_ignores_case_and_at_sign(rules: Rules, handle: str) -> None:
    assert evaluate(rules, share(handle, "management")).fired


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("good management.", ["leadership"]),
        ("Management matters", ["leadership"]),
        ("mismanagementx", []),
        ("mismanagement", []),
        ("managements", []),
        ("soft skills rock", ["leadership"]),
        ("our L&D team", ["learning"]),
    ],
)
def test_keywords_match_on_word_boundaries(rules: Rules, text: str, expected: list[str]) -> None:
    assert matching_topics(rules.topics, text) == expected


def test_first_matching_rule_wins() -> None:
    two = Rules.model_validate(
        {
            "trusted_people": [{"name": "A", "handles": ["@a"], "trust": 0.9}],
            "topics": {"t1": ["alpha"], "t2": ["beta"]},
            "rules": [
                {"name": "first", "topics_any": ["t1"]},
                {"name": "second", "topics_any": ["t2"]},
            ],
        }
    )
    verdict = evaluate(two, share("@a", "beta"))
    assert verdict.fired and verdict.rule is not None and verdict.rule.name == "second"
    assert verdict.topics == ["t2"]


# --- rules-file errors ------------------------------------------------------------------------------------


def load_error(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    return path, str(caught.value)


VALID_HEAD = """\
trusted_people:
  - name: A
    handles: ["@a"]
"""


def test_unknown_key_points_at_the_key(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, VALID_HEAD + "    colour: red\ntopics: {}\n")
    assert message == f"{path}:4:5: trusted_people.0.colour: Extra inputs are not permitted"


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, "topics: {}\nbogus: 1\n")
    assert message == f"{path}:2:1: bogus: Extra inputs are not permitted"


def test_trust_out_of_range_points_at_its_line(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, VALID_HEAD + "    trust: 1.5\n")
    assert message == f"{path}:4:12: trusted_people.0.trust: Input should be less than or equal to 1"


def test_nested_field_error_points_at_its_line(tmp_path: Path) -> None:
    text = "topics:\n  t: [x]\nrules:\n  - name: r\n    topics_any: [t]\n    session:\n      lead_minutes: -1\n"
    path, message = load_error(tmp_path, text)
    assert message.startswith(f"{path}:7:21: rules.0.session.lead_minutes: ")  # at the value


def test_every_error_is_reported_one_per_line(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, VALID_HEAD + "    trust: 1.5\n    colour: red\n")
    lines = message.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}:4:") and "trusted_people.0.trust" in lines[0]
    assert lines[1].startswith(f"{path}:5:") and "trusted_people.0.colour" in lines[1]


UNKNOWN_TOPIC = "topics:\n  t: [x]\nrules:\n  - name: r\n    topics_any: [nope]\n"


def test_rule_naming_unknown_topic_is_refused(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, UNKNOWN_TOPIC)
    assert message.startswith(f"{path}:")
    assert "rule 'r' names unknown topic 'nope' (known: t)" in message


def test_rule_naming_unknown_topic_points_at_the_rule(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, UNKNOWN_TOPIC)
    assert message == f"{path}:5:18: rules.0.topics_any.0: rule 'r' names unknown topic 'nope' (known: t)"


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
