"""Provides `Flow`, the optional declaration of a flow's name and description."""

from __future__ import annotations

from dsl import wiring


class Flow:
    """Names the flow defined in this file; without one, the flow is named after the file's stem.

    Example:
        `flow = Flow("train_and_eval", description="Train and evaluate the model")`
    """

    def __init__(self, name: str | None = None, *, description: str = "") -> None:
        self.name = name
        self.description = description
        self.file, self.line = wiring.caller_location(2)
        wiring.current().flows.append(self)

    def __repr__(self) -> str:
        return f"<Flow {self.name!r}>"
