"""Provides the `{{ }}` expressions of external steps and flow outputs, and how they are filled in.

Three forms, each a reference and so an edge of the graph:

- `{{ inputs.NAME }}`: the flow input (parameter) NAME;
- `{{ steps.STEP.outputs.NAME }}`: output NAME of step STEP (a key of its output when that is a dict);
- `{{ steps.STEP.output }}`: STEP's whole output (for a Python function step returning one value).

A text that is exactly one reference stands for the referenced value itself (a `uses:` function receives
the object); anything else is text with each reference replaced by the value's text form.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_REFERENCE = re.compile(
    r"\s*(?:inputs\.(?P<input>[A-Za-z_]\w*)"
    r"|steps\.(?P<step>[A-Za-z_]\w*)\.(?:outputs\.(?P<output>[A-Za-z_][\w-]*)|(?P<whole>output)))\s*"
)
WHOLE = None
"""`Reference.output` of `{{ steps.STEP.output }}`: the whole output."""


class TemplateError(ValueError):
    """An expression that is not one of the three forms."""


class MissingValue(LookupError):
    """A referenced upstream output that is not there when the step runs."""


@dataclass(frozen=True)
class Reference:
    """One `{{ }}` expression.

    Attributes:
        text: the expression as written, braces included.
        input: the flow input it names, for `{{ inputs.NAME }}`.
        step: the step it names, for `{{ steps.STEP... }}`.
        output: the output's name; `WHOLE` (None) for the whole output.
    """

    text: str
    input: str | None = None
    step: str | None = None
    output: str | None = None

    @property
    def argument(self) -> str:
        """The name the value arrives under in a step call (the input's or the upstream step's)."""
        return self.input if self.input is not None else str(self.step)


def references(text: str) -> list[Reference]:
    """Every `{{ }}` expression in `text`.

    Raises:
        TemplateError: an expression that is none of the three forms, or a stray `{{`/`}}`.
    """
    found: list[Reference] = []
    for match in EXPRESSION.finditer(text):
        parsed = _REFERENCE.fullmatch(match.group(1))
        if parsed is None:
            raise TemplateError(
                f"{match.group(0)!r} is not an expression flow knows; use {{{{ inputs.NAME }}}}, "
                "{{ steps.STEP.outputs.NAME }} or {{ steps.STEP.output }}"
            )
        if parsed.group("input"):
            found.append(Reference(match.group(0), input=parsed.group("input")))
        else:
            output = None if parsed.group("whole") else parsed.group("output")
            found.append(Reference(match.group(0), step=parsed.group("step"), output=output))
    rest = EXPRESSION.sub("", text)
    if "{{" in rest or "}}" in rest:
        raise TemplateError(f"unbalanced {{{{ }}}} in {text!r}")
    return found


def value_of(reference: Reference, values: Mapping[str, Any]) -> Any:
    """The value a reference stands for, given a step call's arguments.

    Raises:
        MissingValue: the upstream output is not a dict holding the named output.
    """
    value = values[reference.argument]
    if reference.step is None or reference.output is WHOLE:
        return value
    if not isinstance(value, Mapping) or reference.output not in value:
        have = ", ".join(map(str, value)) if isinstance(value, Mapping) else type(value).__name__
        raise MissingValue(f"step '{reference.step}' has no output '{reference.output}' (it has: {have})")
    return value[reference.output]


def as_text(value: Any) -> str:
    """A value as it appears in a command line or an environment variable: lists and dicts as JSON
    (what a script in any language can parse), true/false, None as nothing, the rest as `str`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, list | tuple | dict):
        try:
            return json.dumps(value)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def render(text: str, values: Mapping[str, Any], *, quote: bool = False) -> str:
    """`text` with each reference replaced by its value's text (shell-quoted with `quote`)."""

    def fill(match: re.Match[str]) -> str:
        (reference,) = references(match.group(0))
        filled = as_text(value_of(reference, values))
        return shlex.quote(filled) if quote else filled

    return EXPRESSION.sub(fill, text)


def texts(value: Any) -> list[str]:
    """Every text in a value written in a flow (inside lists and dicts too)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [text for item in value for text in texts(item)]
    if isinstance(value, dict):
        return [text for item in value.values() for text in texts(item)]
    return []


def evaluate(template: Any, values: Mapping[str, Any]) -> Any:
    """A value written in a flow: a lone reference gives the value itself, other text is rendered,
    lists and dicts are evaluated item by item, anything else (a number) is taken as it is."""
    if isinstance(template, list | tuple):
        return [evaluate(item, values) for item in template]
    if isinstance(template, dict):
        return {key: evaluate(item, values) for key, item in template.items()}
    if not isinstance(template, str):
        return template
    found = references(template)
    if len(found) == 1 and template.strip() == found[0].text:
        return value_of(found[0], values)
    return render(template, values) if found else template
