"""Provides `combine` (a step's fingerprint from its static parts and run-time values) and `explain`
(why a step runs: what differs from its previous fingerprint).
"""

from __future__ import annotations

from typing import Any

from runner.fingerprint.prints import StaticPrint
from runner.fingerprint.values import text_sha


def combine(
    static: StaticPrint,
    params: dict[str, str],
    inputs: dict[str, str],
    item: str | None = None,
    declared: dict[str, str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The full fingerprint and its parts (stored so a later run can say what changed).

    `declared`: the step's declared input files and environment variables (`runner.fingerprint.declared`).
    """
    detail: dict[str, Any] = {
        "code": static.code,
        "helpers": static.helpers,
        "options": static.options,
        "params": params,
        "inputs": inputs,
    }
    if item is not None:
        detail["item"] = item
    if declared:
        detail["declared"] = declared
    if static.command:
        detail["command"] = static.command
    before, after = static.fixed_text
    text = f"{before}{item or ''}\0{after}"
    if params:
        text += "".join([f"p:{k}={v}\0" for k, v in sorted(params.items())])
    if len(inputs) == 1:  # a chain's step (sorting and joining one part took a tenth of `combine`)
        [(name, digest)] = inputs.items()
        text += f"i:{name}={digest}\0"
    elif inputs:
        text += "".join([f"i:{k}={v}\0" for k, v in sorted(inputs.items())])
    if declared:
        text += "".join([f"d:{k}={v}\0" for k, v in sorted(declared.items())])
    return text_sha(text), detail


def _changed(old: dict[str, str], new: dict[str, str]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def _listed(names: list[str]) -> str:
    return ", ".join(names[:3]) + (" …" if len(names) > 3 else "")


def explain(previous: dict[str, Any] | None, current: dict[str, Any]) -> str:
    """Why a step runs, comparing its fingerprint parts with those of its previous run."""
    if previous is None:
        return "no earlier result"
    if previous.get("command", "") != current.get("command", ""):
        return "command changed"
    if previous.get("code") != current["code"]:
        return "code changed"
    changed = _changed(previous.get("helpers", {}), current["helpers"])
    imported = [k.removeprefix("import ") for k in changed if k.startswith("import ")]
    helpers = [k.removeprefix("flow.") for k in changed if not k.startswith("import ")]
    if helpers:
        return f"helper changed: {_listed(helpers)}"
    if imported:
        return f"imported module changed: {_listed(imported)}"
    if previous.get("options") != current["options"]:
        return "options changed (when/foreach/version)"
    changed = _changed(previous.get("declared", {}), current.get("declared", {}))
    files = [k.partition(":")[2] for k in changed if not k.startswith("env:")]
    variables = [k.removeprefix("env:") for k in changed if k.startswith("env:")]
    if files:
        return f"input file changed: {_listed(files)}"
    if variables:
        return f"environment changed: {_listed(variables)}"
    changed = _changed(previous.get("params", {}), current["params"])
    if changed:
        return f"parameter changed: {', '.join(changed)}"
    changed = _changed(previous.get("inputs", {}), current["inputs"])
    if changed:
        return f"upstream output changed: {', '.join(changed)}"
    if previous.get("item") != current.get("item"):
        return "fan-out item changed"
    return "no cached result (its last execution failed or was stopped)"
