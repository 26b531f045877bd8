"""Provides `parse`: a YAML document as plain values that remember their lines, and `Checker` to read them.

PyYAML is imported here, lazily, inside `parse`: `import dsl` stays standard-library only (see
pyproject.toml's import contract), and only loading a `.yaml` flow needs the parser. PyYAML is used for
its node tree, which keeps every key's line, so every error names the line it is about.
"""

from __future__ import annotations

from typing import Any

from dsl.errors import FlowError

MAX_NODES = 200_000
"""A flow of a thousand steps is ~20,000 values; an alias bomb (each alias repeating the one before)
would otherwise expand without end."""


class Located:
    """A YAML mapping or sequence with the line of itself and of each key (or item)."""

    def __init__(self, value: dict[str, Any] | list[Any], line: int, lines: dict[Any, int]) -> None:
        self.value = value
        self.line = line
        self.lines = lines

    @property
    def entries(self) -> dict[str, Any]:
        """The value as a mapping: for a `Located` already checked to be one (a `Checker`'s)."""
        assert isinstance(self.value, dict), "a YAML list read as a mapping"
        return self.value


def parse(text: str, file: str) -> Any:
    """The document as plain values wrapped in `Located` (mappings and sequences), scalars as YAML types.

    Raises:
        FlowError: a YAML syntax error or a duplicate key, with its line.
    """
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise FlowError("the file is empty; a YAML flow needs at least `steps:`", file=file)
        return _convert(node, loader, file, [MAX_NODES])
    except RecursionError:
        raise FlowError("the document nests too deeply (or an alias refers to itself)", file=file) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.context_mark is not None and exc.context_mark.line + 1 != line:
            problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise FlowError(f"YAML syntax error: {problem}", file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise FlowError(f"YAML syntax error: {exc}", file=file) from None
    finally:
        loader.dispose()


def _convert(node: Any, loader: Any, file: str, budget: list[int]) -> Any:
    """Plain values from a node; `budget` counts the nodes left, aliases expanded (see `MAX_NODES`)."""
    import yaml

    line = node.start_mark.line + 1
    budget[0] -= 1
    if budget[0] < 0:
        raise FlowError(
            f"the document expands to more than {MAX_NODES} values (aliases?)", file=file, line=line
        )
    if isinstance(node, yaml.MappingNode):
        values: dict[Any, Any] = {}
        lines: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = _convert(key_node, loader, file, budget)
            if isinstance(key, Located):
                raise FlowError("a mapping key must be a plain value", file=file, line=key.line)
            if key in values:
                raise FlowError(
                    f"duplicate key '{key}' (first at line {lines[key]})",
                    file=file,
                    line=key_node.start_mark.line + 1,
                )
            values[key] = _convert(value_node, loader, file, budget)
            lines[key] = key_node.start_mark.line + 1
        return Located(values, line, lines)
    if isinstance(node, yaml.SequenceNode):
        items = [_convert(item, loader, file, budget) for item in node.value]
        return Located(items, line, {i: item.start_mark.line + 1 for i, item in enumerate(node.value)})
    return loader.construct_object(node, deep=True)


class Checker:
    """Reads one Located mapping with errors that name the file and the line of the offending key."""

    def __init__(self, file: str, where: str, located: Located, step: str | None = None) -> None:
        self.file = file
        self.where = where
        self.located = located
        self.step = step

    def line_of(self, key: Any) -> int:
        return self.located.lines.get(key, self.located.line)

    def error(self, message: str, key: Any = None) -> FlowError:
        line = self.line_of(key) if key is not None else self.located.line
        return FlowError(message, file=self.file, line=line, step=self.step)

    def only(self, allowed: tuple[str, ...]) -> None:
        for key in self.located.entries:
            if key not in allowed:
                raise self.error(
                    f"unknown key '{key}' in {self.where}; expected one of: {', '.join(allowed)}", key
                )

    def get(self, key: str, default: Any = None) -> Any:
        return self.located.entries.get(key, default)

    def text(self, key: str, default: str = "") -> str:
        value = self.get(key, default)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.error(f"'{key}' must be text, got {describe(value)}", key)
        return value

    def mapping(self, key: str) -> Located | None:
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, Located) or not isinstance(value.value, dict):
            raise self.error(f"'{key}' must be a mapping (name: value), got {describe(value)}", key)
        return value

    def names(self, key: str, what: str) -> list[str]:
        """A list of names; one name alone is taken as a list of one."""
        value = self.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, Located) or not isinstance(value.value, list):
            raise self.error(f"'{key}' must be a list of {what}, got {describe(value)}", key)
        for index, item in enumerate(value.value):
            if not isinstance(item, str) or not item:
                raise FlowError(
                    f"'{key}' must be a list of {what}, got {describe(item)}",
                    file=self.file,
                    line=value.lines.get(index, value.line),
                    step=self.step,
                )
        return list(value.value)


def describe(value: Any) -> str:
    if isinstance(value, Located):
        return "a mapping" if isinstance(value.value, dict) else "a list"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"


def plain(value: Any) -> Any:
    """Located wrappers removed, recursively (for values passed to a step)."""
    if isinstance(value, Located):
        if isinstance(value.value, dict):
            return {k: plain(v) for k, v in value.value.items()}
        return [plain(v) for v in value.value]
    return value
