"""The committed JSON Schemas and AsyncAPI document in schemas/ match the code exactly (drift check)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import bus
from pipeline.app import create_broker
from pipeline.schema_export import ASYNCAPI_FILE, all_documents, render

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
DOCUMENTS = all_documents(create_broker)
HINT = "schemas/ is out of date with the code: run `make schemas` and commit the result"


def test_there_is_a_schema_per_bus_message_and_rules() -> None:
    assert "Share.schema.json" in DOCUMENTS
    assert "DeadLetter.schema.json" in DOCUMENTS
    assert "rules.schema.json" in DOCUMENTS
    assert ASYNCAPI_FILE in DOCUMENTS


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_committed_schema_matches_model(name: str) -> None:
    committed = SCHEMAS / name
    assert committed.is_file(), f"{committed} is missing; {HINT}"
    assert committed.read_text(encoding="utf-8") == render(DOCUMENTS[name]), f"{committed} differs; {HINT}"


def test_no_stale_schema_files() -> None:
    on_disk = {p.name for p in SCHEMAS.glob("*.schema.json")}
    stale = on_disk - set(DOCUMENTS)
    assert not stale, f"stale schema files {sorted(stale)} no longer match a model; {HINT}"


def test_render_is_stable_json() -> None:
    document = DOCUMENTS["Share.schema.json"]
    text = render(document)
    assert text.endswith("}\n")
    assert json.loads(text) == document
    assert render(json.loads(text)) == text  # key order does not depend on the input's order


def test_asyncapi_document_is_reproducible_and_names_every_subject() -> None:
    again = all_documents(create_broker)[ASYNCAPI_FILE]
    assert render(again) == render(DOCUMENTS[ASYNCAPI_FILE])  # no timestamps, no generated ids
    addresses = {channel["address"] for channel in DOCUMENTS[ASYNCAPI_FILE]["channels"].values()}
    assert {
        bus.SHARES.subject,
        bus.DECISIONS.subject,
        bus.PROPOSALS_CREATED.subject,
        bus.dead_letter_subject("trigger"),
    } <= addresses
    assert DOCUMENTS[ASYNCAPI_FILE]["servers"]["development"]["host"] == "localhost:4222"  # the placeholder server
