"""Provides `resolve_params`: flow parameters from defaults, a params file and `-p name=value`.

Values from the command line are strings converted to the parameter's declared type; nothing is ever
evaluated as code (`-p "x=$(rm -rf ~)"` stays a string).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dsl.errors import FlowError
from dsl.graph import ParamSpec
from dsl.loader import LoadedFlow
from dsl.params import REQUIRED

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """`["lr=0.1", "name=a=b"]` -> `{"lr": "0.1", "name": "a=b"}`."""
    result: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise FlowError(f"-p {item!r}: expected name=value")
        result[name.strip()] = value
    return result


def read_params_file(path: str | Path) -> dict[str, Any]:
    """Parameters from a TOML or JSON file (a table/object of name = value)."""
    file = Path(path)
    kind = "JSON" if file.suffix.lower() == ".json" else "TOML"
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowError(f"cannot read the params file: {exc.strerror}", file=str(path)) from None
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start : exc.start + 1]
        raise FlowError(
            f"the params file is not UTF-8 text (byte {exc.start}: {bad!r})", file=str(path)
        ) from None
    import tomllib  # here: only a run given a params file pays for it

    try:
        data = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        raise FlowError(f"invalid {kind}: {exc}", file=str(path), line=line) from None
    except RecursionError:
        raise FlowError(f"invalid {kind}: nested too deeply to be parameters", file=str(path)) from None
    if not isinstance(data, dict):
        raise FlowError("the params file must hold a table/object of name = value", file=str(path))
    return data


def convert(spec: ParamSpec, value: Any) -> Any:
    """Convert a value (a command-line string, or a value from a params file) to `spec.type`."""
    target = spec.type
    try:
        if isinstance(value, str) and target is not str:
            converted = _from_string(target, value)
        elif target is float and isinstance(value, int) and not isinstance(value, bool):
            converted = float(value)
        elif target in (int, float, bool, str) and not isinstance(value, target):
            raise ValueError(f"expected {target.__name__}, got {type(value).__name__}")
        elif target in (list, dict, tuple) and not isinstance(value, target):
            converted = target(value)
        else:
            converted = value
    except RecursionError:
        raise FlowError(
            f"parameter '{spec.name}': the value is nested too deeply to be a {target.__name__}",
            step=spec.steps[0] if spec.steps else None,
        ) from None
    except (ValueError, TypeError) as exc:
        raise FlowError(
            f"parameter '{spec.name}': {value!r} is not a valid {target.__name__} ({exc})",
            step=spec.steps[0] if spec.steps else None,
        ) from None
    if spec.choices is not None and converted not in spec.choices:
        raise FlowError(
            f"parameter '{spec.name}': {converted!r} is not one of {', '.join(map(repr, spec.choices))}",
            step=spec.steps[0] if spec.steps else None,
        )
    return converted


def _from_string(target: type, text: str) -> Any:
    if target is bool:
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError("use true/false")
    if target is int:
        return int(text.strip())
    if target is float:
        return float(text.strip())
    if target is Path:
        return Path(text)
    if target in (list, dict, tuple):
        value = json.loads(text)
        return target(value)
    if target is type(None):
        return text
    return target(text)


def resolve_params(
    specs: Mapping[str, ParamSpec],
    overrides: Mapping[str, Any] | None = None,
    file_values: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every flow parameter's value: default < params file < `-p` (validated, converted).

    Raises:
        FlowError: an unknown name, an unconvertible value, a value outside `choices`, or a
            required parameter with no value.
    """
    values: dict[str, Any] = {}
    for source in (file_values or {}, overrides or {}):
        for name in source:
            if name not in specs:
                known = ", ".join(sorted(specs)) or "none"
                import difflib

                close = difflib.get_close_matches(name, list(specs), n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise FlowError(f"unknown parameter '{name}' ({hint}this flow's parameters: {known})")
    for name, spec in specs.items():
        if overrides and name in overrides:
            values[name] = convert(spec, overrides[name])
        elif file_values and name in file_values:
            values[name] = convert(spec, file_values[name])
        elif spec.default is REQUIRED:
            raise FlowError(
                f"parameter '{name}' is required; pass it with -p {name}=VALUE",
                step=spec.steps[0] if spec.steps else None,
            )
        else:
            values[name] = spec.default
    return values


def resolve_flow_params(
    loaded: LoadedFlow,
    overrides: Mapping[str, Any] | None = None,
    file_values: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`resolve_params` for a loaded flow: an error names the flow file and the reading step's line.

    Raises:
        FlowError: as `resolve_params`, with the file (and the step's line) filled in.
    """
    try:
        return resolve_params(loaded.graph.params, overrides, file_values)
    except FlowError as exc:
        if exc.file:
            raise
        node = loaded.graph.nodes.get(exc.step) if exc.step else None
        step = node.step if node is not None and not node.step.file.startswith("<") else None
        file = step.file if step is not None else str(loaded.path)
        line = (step.line or None) if step is not None else None
        raise FlowError(exc.message, file=file, line=line, step=exc.step) from None
