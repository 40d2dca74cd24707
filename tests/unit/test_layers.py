"""The import-linter layers (`lint-imports` in make test) cover every top-level module of pipeline/: a module left
out of `[tool.importlinter]` would be free to import anything, and the contract would still say KEPT."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import pipeline

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def layered_modules() -> set[str]:
    contracts = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]
    return {
        part.strip()
        for contract in contracts
        for layer in contract["layers"]
        for part in layer.replace("|", ":").split(":")
    }


def test_every_top_level_module_is_in_a_layer_and_every_layer_names_one() -> None:
    modules = {f"pipeline.{module.name}" for module in pkgutil.iter_modules(pipeline.__path__)}
    layered = layered_modules()
    assert sorted(modules - layered) == []  # add a new module to its layer in pyproject.toml
    assert sorted(layered - modules) == []


def test_the_stages_may_not_import_each_other() -> None:
    contracts = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]
    stages = "pipeline.triggers | pipeline.enrich | pipeline.actions | pipeline.outreach | pipeline.archive"
    assert any(stages in contract["layers"] for contract in contracts)  # "|": independent siblings
