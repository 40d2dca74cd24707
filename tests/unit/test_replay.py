"""Reading replay files: good lines become shares with stable ids, bad lines are reported FILE:LINE: field: message."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import ImpromptuError
from pipeline.messages import Share, stable_id
from pipeline.triggers.replay import (
    parse_line,
    parse_replay,
    read_replay_file,
    share_from_cli,
    share_from_file,
)
from pipeline.triggers.share_body import InvalidShare, ShareBody

FILE = Path("shares.jsonl")
URL = "https://example.com/why-elearning-isnt-working"


def bus_share(native_id: str = "1") -> Share:
    return Share.from_source(
        source="x",
        native_id=native_id,
        sharer="@britz",
        text="Worth a read",
        url=URL,
        shared_at=datetime(2025, 3, 4, 10, 15, tzinfo=UTC),
    )


def jsonl(*lines: str) -> bytes:
    return "\n".join(lines).encode()


def test_bus_shares_and_webhook_bodies_are_read_skipping_blanks_and_comments() -> None:
    shared = bus_share()
    data = jsonl(
        "# shares from last week",
        shared.model_dump_json(),
        "",
        "   ",
        json.dumps({"url": URL, "by": "@ana", "text": "on leadership"}),
        '  # an indented comment {"not": "json"}',
        json.dumps({"url": URL, "by": "@bob", "id": "mastodon-9", "network": "mastodon"}),
    )

    parsed = parse_replay(FILE, data)

    assert parsed.errors == []
    kept, body, with_id = parsed.shares
    assert kept == shared  # a bus share is replayed exactly as it was, ids included
    assert (body.id, body.source, body.sharer, body.text) == (
        f"replay:{stable_id('s', URL, '@ana')}",
        "replay",
        "@ana",
        "on leadership",
    )
    assert (with_id.id, with_id.network) == ("replay:mastodon-9", "mastodon")


def test_ids_are_stable_across_reads() -> None:
    data = jsonl(json.dumps({"url": URL, "by": "@ana"}), bus_share().model_dump_json())

    first, second = parse_replay(FILE, data), parse_replay(FILE, data)

    assert [s.id for s in first.shares] == [s.id for s in second.shares]
    assert [s.correlation_id for s in first.shares] == [s.correlation_id for s in second.shares]


def test_every_bad_line_is_reported_with_its_number_and_field() -> None:
    data = jsonl(
        json.dumps({"url": URL, "by": "@ana"}),  # 1 good
        "{not json",  # 2
        json.dumps({"by": "@ana"}),  # 3
        "# a comment",  # 4
        json.dumps({"url": "ftp://example.com", "by": "@ana", "network": "myspace"}),  # 5: two problems
        "[1, 2, 3]",  # 6
        json.dumps({"url": URL, "by": "@ana", "colour": "red"}),  # 7
        json.dumps({"url": URL, "by": "@bob"}),  # 8 good
    )

    parsed = parse_replay(FILE, data)

    assert [s.sharer for s in parsed.shares] == ["@ana", "@bob"]
    assert [(e.line, e.field) for e in parsed.errors] == [
        (2, "<json>"),
        (3, "url"),
        (5, "url"),
        (5, "network"),
        (6, "<json>"),
        (7, "colour"),
    ]
    assert str(parsed.errors[1]) == "shares.jsonl:3: url: Field required"
    assert all(str(e).startswith(f"shares.jsonl:{e.line}: {e.field}: ") and e.message for e in parsed.errors)


def test_a_broken_bus_share_names_the_nested_field() -> None:
    broken = bus_share().model_dump(mode="json") | {"source": "carrier-pigeon", "created_at": "yesterday"}

    parsed = parse_replay(FILE, jsonl(json.dumps(broken)))

    assert {e.field for e in parsed.errors} == {"source", "created_at"}


def test_ids_that_cannot_be_a_nats_header_are_refused() -> None:
    share_with_newline = bus_share().model_dump(mode="json") | {"id": "x:1\r\nNats-Msg-Id: forged"}

    parsed = parse_replay(
        FILE, jsonl(json.dumps(share_with_newline), json.dumps({"url": URL, "by": "@a", "id": "a b"}))
    )

    assert [(e.line, e.field) for e in parsed.errors] == [(1, "id"), (2, "id")]


def test_windows_line_endings_a_byte_order_mark_and_bad_utf8_lines() -> None:
    good = json.dumps({"url": URL, "by": "@ana"}).encode()
    data = b"\xef\xbb\xbf" + good + b"\r\n" + b'{"url": "\xff"}\r\n' + good.replace(b"@ana", b"@bob") + b"\r\n"

    parsed = parse_replay(FILE, data)

    assert [s.sharer for s in parsed.shares] == ["@ana", "@bob"]
    assert [(e.line, e.field) for e in parsed.errors] == [(2, "<line>")]
    assert "UTF-8" in parsed.errors[0].message


def test_an_unreadable_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ImpromptuError, match="missing.jsonl: cannot read"):
        read_replay_file(tmp_path / "missing.jsonl")


def test_share_from_file_reads_either_shape_and_names_the_file_on_error(tmp_path: Path) -> None:
    as_body = tmp_path / "body.json"
    as_body.write_text(json.dumps({"url": URL, "by": "@ana"}, indent=2))
    shared = bus_share()
    as_bus = tmp_path / "bus.json"
    as_bus.write_text(shared.model_dump_json(indent=2))
    broken = tmp_path / "broken.json"
    broken.write_text('{"by": 3}')

    assert share_from_file(as_body).sharer == "@ana"
    assert share_from_file(as_bus) == shared
    with pytest.raises(ImpromptuError) as error:
        share_from_file(broken)
    assert str(error.value).splitlines() == [
        f"{broken}: url: Field required",
        f"{broken}: by: Input should be a valid string",
    ]


def test_share_from_cli_gives_the_id_impromptu_share_gives() -> None:
    share = share_from_cli(url=URL, by="@ana", text="hi", network="x")

    assert (share.id, share.source, share.network) == (f"cli:{stable_id('s', URL, '@ana')}", "cli", "x")
    with pytest.raises(ImpromptuError, match="--network: "):
        share_from_cli(url=URL, by="@ana", network="myspace")


# Any text at all (lone surrogates included): a share, or InvalidShare with named problems; nothing else.
@given(st.text(st.characters(exclude_categories=())))
def test_any_text_line_is_a_share_or_reported_problems(line: str) -> None:
    try:
        parse_line(line)
    except InvalidShare as invalid:
        assert invalid.problems and all(p.field and p.message for p in invalid.problems)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
share_keys = st.sampled_from(sorted(set(Share.model_fields) | set(ShareBody.model_fields)))
near_shares = st.dictionaries(share_keys, json_values | st.just(URL) | st.just("@britz"), max_size=12)


# Objects with the right keys and wrong values get deep into validation; still only InvalidShare.
@given(near_shares)
def test_any_json_object_with_share_keys_is_a_share_or_reported_problems(data: dict[str, object]) -> None:
    try:
        share = parse_line(json.dumps(data))
    except InvalidShare as invalid:
        assert invalid.problems and all(p.field and p.message for p in invalid.problems)
    else:
        assert Share.model_validate_json(share.model_dump_json()) == share  # it can go on the bus


@given(st.binary())
def test_any_bytes_parse_into_shares_and_line_numbered_errors(data: bytes) -> None:
    parsed = parse_replay(FILE, data)

    line_count = data.count(b"\n") + 1
    assert all(1 <= e.line <= line_count for e in parsed.errors)
    assert len(parsed.shares) <= line_count
