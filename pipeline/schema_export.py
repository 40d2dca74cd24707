"""Schema files generated from the code (`impromptu schemas export`): the JSON Schema of each message model and of
the rules model, and the AsyncAPI document of every subject the stages consume and emit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faststream.nats import NatsBroker
from faststream.specification import AsyncAPI
from pydantic import BaseModel

from pipeline.domain.rules import Rules
from pipeline.messages import BUS_MESSAGES
from pipeline.settings import DEFAULT_RULES, Settings

ASYNCAPI_FILE = "asyncapi.json"
# The committed document names a placeholder server, so it does not depend on where it was generated.
REFERENCE_NATS_URL = "nats://localhost:4222"

BrokerFactory = Callable[[Settings], NatsBroker]


def schema_documents() -> dict[str, dict[str, object]]:
    models: list[tuple[str, type[BaseModel]]] = [(m.__name__, m) for m in BUS_MESSAGES]
    models.append(("rules", Rules))
    return {f"{name}.schema.json": model.model_json_schema() for name, model in models}


def asyncapi_document(broker: NatsBroker) -> dict[str, Any]:
    """AsyncAPI 3.0 of `broker`'s subscribers and publishers (FastStream builds it; JSON, no timestamps)."""
    spec = AsyncAPI(
        broker,
        title="Impromptu",
        version="0.1.0",
        description="A trusted colleague's share becomes a live learning session: every subject and message.",
        schema_version="3.0.0",
    ).to_specification()
    document: dict[str, Any] = json.loads(spec.to_json())
    return document


def reference_asyncapi(create_broker: BrokerFactory) -> dict[str, Any]:
    """The document of a pipeline built (by pipeline.app's `create_broker`, handed in: the app is a layer above) from
    the default settings and rules, never connected."""
    settings = Settings(nats_url=REFERENCE_NATS_URL, rules_file=DEFAULT_RULES)
    return asyncapi_document(create_broker(settings))


def all_documents(create_broker: BrokerFactory) -> dict[str, dict[str, Any]]:
    return {**schema_documents(), ASYNCAPI_FILE: reference_asyncapi(create_broker)}


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def write_schemas(folder: Path, create_broker: BrokerFactory) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in all_documents(create_broker).items():
        path = folder / name
        path.write_text(render(document), encoding="utf-8")
        written.append(path)
    return written
