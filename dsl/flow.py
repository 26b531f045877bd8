"""Provides `Flow`, the optional declaration of a flow's name, description and outputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dsl import wiring
from dsl.errors import FlowError

if TYPE_CHECKING:
    from dsl.graph import Graph


class Flow:
    """Names the flow defined in this file; without one, the flow is named after the file's stem.

    Example:
        ```python
        flow = Flow("train_and_eval", description="Train and evaluate the model",
                    outputs={"accuracy": (evaluate, "accuracy"), "model": train})
        ```

    `outputs` are the flow's results, printed after `flow run`, stored with the run and shown by
    `flow show`: each is a step (its whole output), `(step, "key")` (one key of a step's dict output),
    or the text `"{{ steps.STEP.outputs.KEY }}"` as in a YAML flow.
    """

    def __init__(
        self, name: str | None = None, *, description: str = "", outputs: Mapping[str, Any] | None = None
    ) -> None:
        self.name = name
        self.description = description
        self.outputs = dict(outputs or {})
        self.file, self.line = wiring.caller_location(2)
        wiring.current().flows.append(self)

    def __repr__(self) -> str:
        return f"<Flow {self.name!r}>"

    def output_refs(self, graph: Graph) -> dict[str, tuple[str, str | None]]:
        """Each output as (step name, key or None), checked against the graph.

        Raises:
            FlowError: an output that names no step of the flow, or is none of the three forms.
        """
        from dsl import templates
        from dsl.step import Step

        refs: dict[str, tuple[str, str | None]] = {}
        for name, value in self.outputs.items():
            key: str | None = None
            if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
                value, key = value
            if isinstance(value, str):
                found = templates.references(value) if "{{" in value else []
                if len(found) != 1 or found[0].step is None or found[0].text != value.strip():
                    raise FlowError(
                        f"flow output '{name}' must be a step, (step, 'key') or "
                        "'{{ steps.STEP.outputs.KEY }}'",
                        file=self.file,
                        line=self.line,
                    )
                step_name, key = str(found[0].step), found[0].output
            elif isinstance(value, Step):
                step_name = value.name
            else:
                raise FlowError(
                    f"flow output '{name}' must be a step, (step, 'key') or "
                    f"'{{{{ steps.STEP.outputs.KEY }}}}', got {value!r}",
                    file=self.file,
                    line=self.line,
                )
            if step_name not in graph.nodes:
                raise FlowError(
                    f"flow output '{name}' names '{step_name}', which is not a step of this flow",
                    file=self.file,
                    line=self.line,
                )
            refs[str(name)] = (step_name, key)
        return refs
