"""Load a YAML file into a pydantic model; every error names the file, line, column and field.

A file is bounded before YAML sees it: larger than `YamlBounds.max_bytes` it is refused unread, nested deeper than
`max_depth` (brackets, braces, block indentation, `- - -`) it is refused by a scan that never recurses, so libyaml's
recursive composer (which crashed the process on a file 50,000 brackets deep) only ever gets shallow input.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)
Location = tuple[int | str, ...]
# A check across fields (e.g. a rule naming an unknown topic): (location, message) for each problem.
CrossCheck = Callable[[ModelT], Iterable[tuple[Location, str]]]


@dataclass(frozen=True)
class YamlBounds:
    max_bytes: int = 1_048_576
    max_depth: int = 64


DEFAULT_BOUNDS = YamlBounds()  # the settings' defaults (rules_max_bytes, rules_max_depth)

# --- the nesting scan ---------------------------------------------------------------------------------------------
# It follows libyaml's scanner closely enough that it can only over-count: whatever it skips (comments, quoted and
# block scalars, plain text) libyaml skips too; where it is unsure it counts. A valid file it refuses would have to
# nest 64 levels, or put unbalanced brackets where a collection could start.

_BREAKS = re.compile(r"\r\n|[\r\x85\u2028\u2029]")  # libyaml's line breaks, as \n
_BLANK = re.compile(r"[ \t]*")
_INDENT = re.compile(r" *")
_SINGLE = re.compile(r"'(?:[^']|'')*'")
_DOUBLE = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_PROPERTY_BLOCK = re.compile(r"[^ \t\n]*")
_PROPERTY_FLOW = re.compile(r"[^ \t\n,\[\]{}]*")
_PLAIN_BLOCK = re.compile(r"(?:[^\n:#]|:(?=[^ \t\n])|(?<=[^ \t])#)*")
_PLAIN_FLOW = re.compile(r"(?:[^\n:#,\[\]{}]|:(?=[^ \t\n,\[\]{}])|(?<=[^ \t])#)*")
_KEY_END = re.compile(r"[ \t]*:(?=[ \t\n]|$)")


def nesting_too_deep(text: str, limit: int) -> tuple[int, int] | None:
    """(line, column), 1-based, where the nesting first goes deeper than `limit`; None when it never does."""
    text = _BREAKS.sub("\n", text)
    size = len(text)
    blocks: list[tuple[int, str]] = []  # open block collections: (column, "seq" or "map")
    flow = 0  # open [ and {
    pos = 0
    line_start = 0

    def where(at: int) -> tuple[int, int]:
        return text.count("\n", 0, at) + 1, at - (text.rfind("\n", 0, at) + 1) + 1

    def open_block(column: int, kind: str) -> bool:
        while blocks and (blocks[-1][0] > column or (blocks[-1][0] == column and kind in (blocks[-1][1], "map"))):
            blocks.pop()
        blocks.append((column, kind))
        return len(blocks) + flow > limit

    while pos < size:
        pos = _BLANK.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= size:
            break
        char = text[pos]
        column = pos - line_start
        after = text[pos + 1] if pos + 1 < size else "\n"
        if char == "\n":
            pos += 1
            line_start = pos
        elif char == "#" or (char == "%" and column == 0):  # a comment, a directive: to the end of the line
            end = text.find("\n", pos)
            pos = size if end < 0 else end
        elif char in "[{":
            flow += 1
            if len(blocks) + flow > limit:
                return where(pos)
            pos += 1
        elif char in "]}":
            flow = max(0, flow - 1)
            pos += 1
        elif char == "," and flow:
            pos += 1
        elif char in "-?:" and (after in " \t\n" or (flow and after in ",[]{}")):
            if not flow and char != ":" and open_block(column, "seq" if char == "-" else "map"):
                return where(pos)
            pos += 1
        elif char == "-" and column == 0 and text.startswith("---", pos):  # a document marker
            pos += 3
        elif char in "'\"":
            quoted = (_SINGLE if char == "'" else _DOUBLE).match(text, pos)
            end = quoted.end() if quoted else size  # unclosed: libyaml fails on it before composing anything
            line_start = max(line_start, text.rfind("\n", pos, end) + 1)
            if not flow and _KEY_END.match(text, end) and open_block(column, "map"):
                return where(pos)
            pos = end
        elif char in "&!*":  # an anchor, a tag, an alias
            pos = (_PROPERTY_FLOW if flow else _PROPERTY_BLOCK).match(text, pos + 1).end()  # type: ignore[union-attr]
        elif char in "|>" and not flow:  # a block scalar: the lines indented deeper than its parent are its text
            parent = blocks[-1][0] if blocks else -1
            end = text.find("\n", pos)
            pos = size if end < 0 else end + 1
            while pos < size:
                indent = _INDENT.match(text, pos).end() - pos  # type: ignore[union-attr]
                end = text.find("\n", pos)
                blank = text[pos + indent : size if end < 0 else end].strip() == ""
                if not blank and indent <= parent:
                    break
                pos = size if end < 0 else end + 1
            line_start = pos
        else:  # plain text, up to ": ", " #" or the end of the line (in a flow collection, also , [ ] { })
            end = (_PLAIN_FLOW if flow else _PLAIN_BLOCK).match(text, pos).end()  # type: ignore[union-attr]
            if end == pos:  # a character nothing above takes (a stray indicator): count it and move on
                end = pos + 1
            if not flow and _KEY_END.match(text, end) and open_block(column, "map"):
                return where(pos)
            pos = end
    return None


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


def read_bounded(path: Path, bounds: YamlBounds) -> str:
    """The file's text, or ConfigError (FILE:LINE:COLUMN) when it is unreadable, too large or nested too deep."""
    try:
        with path.open("rb") as file:
            data = file.read(bounds.max_bytes + 1)  # never more: a file that grows while read is still bounded
    except OSError as error:
        raise ConfigError(f"{path}:1:1: <file>: cannot read: {error.strerror}") from error
    if len(data) > bounds.max_bytes:
        raise ConfigError(f"{path}:1:1: <file>: larger than {bounds.max_bytes} bytes: refused unread")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}:1: <file>: not UTF-8 text (byte {error.start})") from error
    if (deep := nesting_too_deep(text, bounds.max_depth)) is not None:
        line, column = deep
        raise ConfigError(f"{path}:{line}:{column}: <yaml>: nested deeper than {bounds.max_depth} levels")
    return text


def load_yaml_model(
    path: Path, model: type[ModelT], checks: Iterable[CrossCheck[ModelT]] = (), bounds: YamlBounds = DEFAULT_BOUNDS
) -> ModelT:
    text = read_bounded(path, bounds)
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
