"""Provides `collect`: a finished run's flow outputs (YAML `outputs:`, `Flow(outputs=...)`) as records.

A flow output names a step's output, or one key of it. It is read once the run ends, from outputs the
run already holds (cached steps' from the store), and kept with the run as a preview plus where it came
from, so `flow show`, the TUI and the Python API (`Store.flow_output`) need not reload the flow file.
Nothing here can fail a run: an output that is not there (its step failed, was skipped or was outside
the selection) is left out, one that cannot be read is shown as unavailable.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from typing import Any

from dsl.loader import LoadedFlow
from runner.artifacts import ArtifactError, preview
from runner.records import FlowOutput
from runner.status import OK


def pick(value: Any, key: str | None) -> Any:
    """The flow output's value from its step's output.

    Raises:
        KeyError: the step's output is not a dict holding `key`.
    """
    if key is None:
        return value
    if not isinstance(value, Mapping) or key not in value:
        raise KeyError(key)
    return value[key]


def shown(value: Any) -> str:
    """Text is shown as it is (a command's output is text); anything else as a bounded repr."""
    if isinstance(value, str):
        return value if len(value) <= 300 else value[:299] + "…"
    return preview(value)


def collect(
    loaded: LoadedFlow, states: Mapping[str, Any], load: Callable[[Any], Any]
) -> dict[str, FlowOutput]:
    """Each flow output whose step ended with an output in this run. `states` are the engine's step
    states (with `status`, `output` and `preview`); `load` turns an output into its value as plain
    data and raises `pickle.UnpicklingError` for an object, whose worker-made preview is shown."""
    found: dict[str, FlowOutput] = {}
    for name, (step, key) in loaded.outputs.items():
        state = states.get(step)
        if state is None or state.status not in OK or state.output is None:
            continue
        try:
            text = shown(pick(load(state.output), key))
        except KeyError:
            text = f"<step '{step}' returned no '{key}'>"
        except pickle.UnpicklingError:
            text = state.preview if key is None and state.preview else f"<an object: see {step}'s output>"
        except (ArtifactError, OSError, Exception) as exc:  # a corrupt or unreadable artifact
            text = f"<unavailable: {type(exc).__name__}>"
        found[name] = FlowOutput(step=step, key=key, preview=text)
    return found
