"""flow's DSL: what users import to write a flow.

Example:
    ```python
    from dsl import step, param, Flow

    @step
    def fetch_data(rows: int = 1000):
        return list(range(rows))

    @step(retries=2)
    def build_dataset(fetch_data):
        return [x * 2 for x in fetch_data]
    ```
"""

from typing import Any

from dsl.context import current_step, log_metric
from dsl.errors import FlowError
from dsl.flow import Flow
from dsl.graph import Graph, Node, ParamSpec, build_graph
from dsl.loader import LoadedFlow, load_flow
from dsl.operating import post_json, run_command
from dsl.params import REQUIRED, Param, param
from dsl.step import TRIGGER_RULES, Step, step


def __getattr__(name: str) -> Any:
    """`command` and `container` (dsl.commands), `Job` and `job` (dsl.jobs) load on first use: a flow
    of plain Python steps never pays for subprocess, tempfile and tomllib."""
    if name in ("command", "container"):
        from dsl import commands

        return getattr(commands, name)
    if name in ("Job", "job"):
        from dsl import jobs

        return getattr(jobs, name)
    raise AttributeError(f"module 'dsl' has no attribute {name!r}")


__all__ = [
    "REQUIRED",
    "TRIGGER_RULES",
    "Flow",
    "FlowError",
    "Graph",
    "Job",
    "LoadedFlow",
    "Node",
    "Param",
    "ParamSpec",
    "Step",
    "build_graph",
    "command",
    "container",
    "current_step",
    "job",
    "load_flow",
    "log_metric",
    "param",
    "post_json",
    "run_command",
    "step",
]
