"""JSON Schema files generated from the message models and the rules model (`impromptu schemas export`)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from pipeline.messages import BUS_MESSAGES
from pipeline.triggers.rules import Rules


def schema_documents() -> dict[str, dict[str, object]]:
    models: list[tuple[str, type[BaseModel]]] = [(m.__name__, m) for m in BUS_MESSAGES]
    models.append(("rules", Rules))
    return {f"{name}.schema.json": model.model_json_schema() for name, model in models}


def render(document: dict[str, object]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in schema_documents().items():
        path = folder / name
        path.write_text(render(document), encoding="utf-8")
        written.append(path)
    return written
