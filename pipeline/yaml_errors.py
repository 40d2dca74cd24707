"""Load a YAML file into a pydantic model; every error names the file, line, column and field."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)
Location = tuple[int | str, ...]
# A check across fields (e.g. a rule naming an unknown topic): (location, message) for each problem.
CrossCheck = Callable[[ModelT], Iterable[tuple[Location, str]]]


def _node_at(root: yaml.Node | None, loc: Location, *, at_key: bool) -> yaml.Node | None:
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


def _field_part(part: int | str) -> str:
    text = str(part)
    # a key with spaces, dots or control characters is quoted, so one error stays one readable line
    return text if text and all(c.isalnum() or c in "_-" for c in text) else repr(text)


def _line(path: Path, root: yaml.Node | None, loc: Location, message: str, *, at_key: bool = False) -> str:
    node = _node_at(root, loc, at_key=at_key)
    line, column = (node.start_mark.line + 1, node.start_mark.column + 1) if node else (1, 1)
    field = ".".join(_field_part(part) for part in loc) or "<file>"
    return f"{path}:{line}:{column}: {field}: {message}"


def format_validation_error(path: Path, error: ValidationError, root: yaml.Node | None) -> list[str]:
    lines = [
        _line(
            path,
            root,
            # drop pydantic's internal steps such as 'function-after[...]'
            tuple(part for part in issue["loc"] if not (isinstance(part, str) and "[" in part)),
            issue["msg"].removeprefix("Value error, "),
            at_key=issue["type"] == "extra_forbidden",
        )
        for issue in error.errors(include_url=False)
    ]
    return sorted(lines, key=lambda line: _position(path, line))


def _position(path: Path, line: str) -> tuple[int, int]:
    """(line, column) of a formatted error, so errors read top to bottom like the file."""
    line_number, column, _ = line.removeprefix(f"{path}:").split(":", 2)
    return int(line_number), int(column)


# libyaml when PyYAML has it: a rules file of 10,000 people loads in a fraction of the pure-Python time
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse(text: str) -> tuple[yaml.Node | None, object]:
    """The node tree (for line numbers) and the data, from one parse."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        return root, loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()


def load_yaml_model(path: Path, model: type[ModelT], checks: Iterable[CrossCheck[ModelT]] = ()) -> ModelT:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}:1:1: <file>: cannot read: {error.strerror}") from error
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}:1: <file>: not UTF-8 text (byte {error.start})") from error
    try:
        root, data = _parse(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"{mark.line + 1}:{mark.column + 1}" if mark else "1:1"
        raise ConfigError(f"{path}:{where}: <yaml>: {error.problem}") from error
    except yaml.reader.ReaderError as error:  # a character YAML does not allow, e.g. a control character
        line = text[: error.position].count("\n") + 1
        raise ConfigError(f"{path}:{line}:1: <yaml>: {error.reason} {error.character!r} is not allowed") from error
    except (yaml.YAMLError, RecursionError) as error:
        raise ConfigError(f"{path}:1:1: <yaml>: {error}") from error
    try:
        loaded = model.model_validate(data if data is not None else {})
    except ValidationError as error:
        raise ConfigError("\n".join(format_validation_error(path, error, root))) from error
    problems = [_line(path, root, loc, message) for check in checks for loc, message in check(loaded)]
    if problems:
        raise ConfigError("\n".join(problems))
    return loaded
