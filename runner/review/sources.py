"""Provides `code_changes`: the unified diffs behind "code changed" and "helper changed: X", between
the source a result was computed from (kept in the store, `runner.store.sources`) and another one (the
source now, or another run's).

A fingerprint part is compared by its hash; the texts are looked up only for the parts that differ. A
part whose text is not known (a lambda, a value with code inside, an imported module's closure, a run
from before the store kept sources, or texts `flow gc` removed) is named with a note instead of a diff.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

NOT_KEPT = "its source was not kept (a lambda, a value, an imported module, or collected by flow gc)"


@dataclass(frozen=True)
class CodeChange:
    """One changed part of a step's code.

    Attributes:
        part: `code` (the step's own function) or the helper's name (`normalize`, `utils.scale`).
        diff: the unified diff's lines (no line ends), or empty when a side's text is unknown.
        note: why there is no diff, or None.
    """

    part: str
    diff: tuple[str, ...]
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["diff"] = list(self.diff)
        return data


def _parts(detail: Mapping[str, Any] | None) -> dict[str, str]:
    if not detail:
        return {}
    parts = {"code": str(detail.get("code", ""))}
    parts.update({str(k): str(v) for k, v in dict(detail.get("helpers", {})).items()})
    return parts


def _label(part: str) -> str:
    return part.removeprefix("flow.")


def code_changes(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    texts: Mapping[str, str],
    stored: Callable[[Iterable[str]], Mapping[str, str]],
    *,
    old_name: str,
    new_name: str,
) -> list[CodeChange]:
    """The code and helper parts that differ between two fingerprint details, each as a diff.

    `texts`: sources already at hand by hash (the flow as loaded now); `stored` looks up the rest
    (`Store.source_texts`). `old_name`/`new_name` label the two sides (`run #3`, `now`).
    """
    old, new = _parts(before), _parts(after)
    changed = [k for k in [*new, *(k for k in old if k not in new)] if old.get(k) != new.get(k)]
    if not changed:
        return []
    wanted = {old[k] for k in changed if k in old} | {new[k] for k in changed if k in new}
    known = dict(stored(h for h in wanted if h not in texts))
    known.update({h: texts[h] for h in wanted if h in texts})
    found: list[CodeChange] = []
    for part in changed:
        label = _label(part)
        if part.startswith("import "):
            found.append(CodeChange(label, (), "an imported module (or one it imports) changed"))
            continue
        old_text = "" if part not in old else known.get(old[part])
        new_text = "" if part not in new else known.get(new[part])
        if old_text is None or new_text is None:
            found.append(CodeChange(label, (), NOT_KEPT))
            continue
        lines = difflib.unified_diff(
            old_text.splitlines(),
            new_text.splitlines(),
            fromfile=f"{label} ({old_name})",
            tofile=f"{label} ({new_name})",
            lineterm="",
        )
        diff = tuple(lines)
        note = None if diff else "its source reads the same (its defaults or captured values changed)"
        found.append(CodeChange(label, diff, note))
    return found
