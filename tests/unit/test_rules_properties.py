"""Property tests: no rules file and no share makes `rules check` or `rules explain` crash; they either work
or say what is wrong."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from pipeline.cli import cli
from pipeline.domain.rules import Rules, load_rules
from pipeline.domain.scoring import Known
from pipeline.errors import ConfigError
from pipeline.messages import Share
from pipeline.triggers.explain import explain

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rules.yaml"
FIELDS = sorted(
    {*Rules.model_fields, "name", "x", "mastodon", "rss", "trust", "trusted_on", "when", "topics_any", "min_score"}
    | {"keywords", "session", "lead_minutes", "start", "end", "domains", "respect", "facilitators", "cooldown_minutes"}
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(FIELDS),
)
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=25,
)


def check(text: str | bytes) -> Rules | str:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rules.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        try:
            return load_rules(path)
        except ConfigError as error:
            message = str(error)
            assert all(line.startswith(f"{path}:") for line in message.splitlines()), message
            return message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_yaml_document_is_either_rules_or_located_errors(document: Any) -> None:
    check(yaml.safe_dump(document))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_either_rules_or_located_errors(text: str) -> None:
    check(text)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_either_rules_or_located_errors(data: bytes) -> None:
    check(data)


def share_or_none(**fields: Any) -> Share | None:
    try:
        return Share.from_source(**fields)
    except ValidationError:  # not a share at all: the bus and the webhook refuse it before any rule sees it
        return None


known = Known.of(load_rules(EXAMPLE))
shares = st.builds(
    share_or_none,
    source=st.sampled_from(["x", "rss", "mastodon", "webhook", "cli", "replay"]),
    native_id=st.text(min_size=1, max_size=10),
    sharer=st.text(max_size=30) | st.sampled_from(["@britz", "janehart", "britz@mastodon.social"]),
    network=st.none() | st.sampled_from(["x", "mastodon", "linkedin", "rss"]),
    text=st.text(max_size=120) | st.just("Josh Bersin on leadership and training"),
    url=st.sampled_from(["https://joshbersin.com/a?utm_source=x#y", "http://EXAMPLE.com:80/p?id=1"])
    | st.sampled_from(["https://", "http://"]).flatmap(lambda scheme: st.text(max_size=40).map(lambda r: scheme + r)),
    shared_at=st.datetimes(timezones=st.just(UTC)),
    is_reply=st.booleans(),
    is_repost=st.booleans(),
    language=st.none() | st.text(max_size=6),
).filter(lambda share: share is not None)


@settings(max_examples=300, deadline=None)
@given(shares, st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9000, 1, 1), timezones=st.just(UTC)))
def test_explain_never_crashes(share: Share, now: datetime) -> None:
    verdict, text = explain(known, share, now)
    assert text.startswith("would fire" if verdict.winner else "would not fire")


def test_the_command_prints_only_located_errors_never_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "people:\n  - name: A\n    x: a\n    trust: high\nrules:\n  - name: r\n    when: {topics_any: [nope]}\n"
    )
    result = CliRunner().invoke(cli, ["rules", "check", str(bad)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    # cross-field checks (the unknown topic) run once the file validates field by field
    assert result.output.splitlines() == [
        f"{bad}:4:12: people.0.trust: Input should be a valid number, unable to parse string as a number"
    ]
