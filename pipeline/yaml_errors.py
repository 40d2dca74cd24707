"""Load a YAML file into a pydantic model; every error names the file, line, column and field."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)


def _node_at(root: yaml.Node | None, loc: tuple[int | str, ...], *, at_key: bool) -> yaml.Node | None:
    """The deepest YAML node along a pydantic error location; `at_key` points at the key, not its value."""
    node = root
    for depth, part in enumerate(loc, start=1):
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                return node
            key, value = match
            node = key if at_key and depth == len(loc) else value
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def format_validation_error(path: Path, error: ValidationError, root: yaml.Node | None) -> list[str]:
    lines = []
    for issue in error.errors(include_url=False):
        loc = tuple(part for part in issue["loc"] if not (isinstance(part, str) and "[" in part))
        node = _node_at(root, loc, at_key=issue["type"] == "extra_forbidden")
        line, column = (node.start_mark.line + 1, node.start_mark.column + 1) if node else (1, 1)
        field = ".".join(str(part) for part in loc) or "<file>"
        lines.append(f"{path}:{line}:{column}: {field}: {issue['msg']}")
    return lines


def load_yaml_model(path: Path, model: type[ModelT]) -> ModelT:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}:1:1: <file>: cannot read: {error.strerror}") from error
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"{mark.line + 1}:{mark.column + 1}" if mark else "1:1"
        raise ConfigError(f"{path}:{where}: <yaml>: {error.problem}") from error
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as error:
        raise ConfigError("\n".join(format_validation_error(path, error, root))) from error
