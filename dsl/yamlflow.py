"""Provides `compile_yaml`: a YAML flow file turned into the same steps and edges a Python flow gives.

The schema (documented in the README; `docs/flow.schema.json` for editors):

    name: train_and_eval                 # optional; default: the file's stem
    description: ...
    inputs:                              # flow inputs: the flow's parameters (-p lr=0.5)
      lr: {type: float, default: 0.1, description: learning rate}
    outputs:                             # flow outputs: name -> {{ steps.STEP.outputs.NAME }}
      accuracy: "{{ steps.evaluate.outputs.accuracy }}"
    schedule: "0 3 * * *"                # optional: flow serve runs it (or every: 30s), see the README
    timezone: Europe/Berlin
    steps:
      - name: prepare
        command: [python3, prepare.py, --rows, "{{ inputs.rows }}"]
        outputs: [path]
      - name: train
        uses: pipeline_steps:train       # a Python function, called with `inputs` as keyword arguments
        inputs: {data: "{{ steps.prepare.outputs.path }}", lr: "{{ inputs.lr }}"}
        outputs: [model]

A step has exactly one of `command` (an argv list; a string only with `shell: true`), `image` (a
container, with an optional `command`) or `uses: module:function`. Every problem is a `FlowError`
naming the file and line, raised before anything runs.

The document is read by `dsl.yamldoc` (PyYAML, imported only when a `.yaml` flow loads), which keeps
the line of every key for the error messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsl import templates
from dsl.errors import FlowError
from dsl.flow import Flow
from dsl.params import REQUIRED, Param
from dsl.step import Step
from dsl.wiring import Edge
from dsl.yamldoc import Checker, Located, describe, parse
from dsl.yamloperating import OPERATING_KEYS, declaration
from dsl.yamlstep import STEP_KEYS, check_references, compile_step

TOP_KEYS = ("name", "description", "inputs", "outputs", "steps", *OPERATING_KEYS)
INPUT_KEYS = ("type", "default", "description")
TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool, "path": Path}


@dataclass
class YamlFlow:
    """What a YAML flow file declares, ready for `dsl.graph.build_graph`.

    Attributes:
        name: the `name:` (None: the file's stem).
        description: the `description:`.
        steps: the steps, in file order.
        edges: the `needs:` edges.
        outputs: flow output name -> (step, output name or None for the whole output).
        declaration: its schedule and loop (`schedule:`, `every:`, `loop:`, ...) as a `Flow`, if any.
    """

    name: str | None
    description: str
    steps: list[Step] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    outputs: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    declaration: Flow | None = None


def compile_yaml(text: str, file: str, root: Path) -> YamlFlow:
    """Compile a YAML flow's text (see the module docstring); `uses:` modules are imported here.

    Raises:
        FlowError: any problem, with the file and line.
    """
    document = parse(text, file)
    if not isinstance(document, Located) or not isinstance(document.value, dict):
        raise FlowError(
            f"a YAML flow is a mapping with at least `steps:`, got {describe(document)}", file=file, line=1
        )
    top = Checker(file, "the flow", document)
    top.only(TOP_KEYS)
    name = top.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise top.error(f"'name' must be text, got {describe(name)}", "name")
    flow = YamlFlow(name=name, description=top.text("description"))
    params = _inputs(top)
    checkers = _step_checkers(top, params)
    declared = {c.step: c.names("outputs", "output names") for c in checkers}
    for check in checkers:
        check_references(check, declared)
        flow.steps.append(compile_step(check, params, root))
    flow.edges = _needs(checkers, {item.name: item for item in flow.steps})
    flow.outputs = _flow_outputs(top, declared)
    flow.declaration = declaration(top, name, flow.description)
    return flow


def _step_checkers(top: Checker, params: dict[str, Param]) -> list[Checker]:
    """A checker per entry of `steps:`, each named after its step (`check.step`), in file order.

    Raises:
        FlowError: no `steps:`, an entry that is not a mapping, a missing, malformed or repeated
            step name, a step named like a flow input, or an unknown key.
    """
    file = top.file
    steps_node = top.get("steps")
    if steps_node is None:
        raise top.error("the flow has no `steps:`; a flow needs at least one step")
    if not isinstance(steps_node, Located) or not isinstance(steps_node.value, list) or not steps_node.value:
        raise top.error(f"'steps' must be a non-empty list of steps, got {describe(steps_node)}", "steps")
    checkers: list[Checker] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(steps_node.value):
        line = steps_node.lines.get(index, steps_node.line)
        if not isinstance(raw, Located) or not isinstance(raw.value, dict):
            raise FlowError(f"each step is a mapping with a name, got {describe(raw)}", file=file, line=line)
        check = Checker(file, "a step", raw)
        step_name = check.get("name")
        if not isinstance(step_name, str) or not step_name:
            raise check.error("a step needs a `name:`", "name" if "name" in raw.value else None)
        check.step = step_name
        check.where = f"step '{step_name}'"
        if not step_name.isidentifier():
            raise check.error(
                f"step name {step_name!r} must be letters, digits and _ (not starting with a digit)", "name"
            )
        if step_name in seen:
            raise check.error(
                f"two steps are named '{step_name}' (the other at line {seen[step_name]}); rename one", "name"
            )
        if step_name in params:
            raise check.error(f"'{step_name}' is both a flow input and a step; rename one", "name")
        seen[step_name] = check.line_of("name")
        check.only(STEP_KEYS)
        checkers.append(check)
    return checkers


def _needs(checkers: list[Checker], by_name: dict[str, Step]) -> list[Edge]:
    """The `needs:` edges, each with the line it is written on.

    Raises:
        FlowError: a `needs:` naming an unknown step.
    """
    edges: list[Edge] = []
    for check in checkers:
        needs = check.get("needs")
        for index, upstream in enumerate(check.names("needs", "step names")):
            line = (
                needs.lines.get(index, needs.line) if isinstance(needs, Located) else check.line_of("needs")
            )
            if upstream not in by_name:
                raise FlowError(
                    f"needs: unknown step '{upstream}' (steps: {', '.join(by_name)})",
                    file=check.file,
                    line=line,
                    step=check.step,
                )
            edges.append(Edge(by_name[upstream], by_name[str(check.step)], check.file, line))
    return edges


def _inputs(top: Checker) -> dict[str, Param]:
    """The flow inputs as the parameters `{{ inputs.NAME }}` stands for."""
    node = top.mapping("inputs")
    params: dict[str, Param] = {}
    if node is None:
        return params
    for input_name, spec in node.entries.items():
        where = Checker(top.file, f"input '{input_name}'", node)
        line_key = input_name
        if not isinstance(input_name, str) or not input_name.isidentifier():
            raise where.error(f"input name {input_name!r} must be letters, digits and _", line_key)
        if spec is None:
            spec = Located({}, node.lines[input_name], {})
        if not isinstance(spec, Located) or not isinstance(spec.value, dict):
            raise where.error(
                f"input '{input_name}' must be a mapping (type, default, description), got {describe(spec)}",
                line_key,
            )
        check = Checker(top.file, f"input '{input_name}'", spec)
        check.only(INPUT_KEYS)
        type_name = check.get("type", "str")
        if type_name not in TYPES:
            raise check.error(
                f"input '{input_name}': type must be one of {', '.join(TYPES)}, got {type_name!r}", "type"
            )
        target = TYPES[type_name]
        default = check.get("default", REQUIRED)
        if default is not REQUIRED:
            default = _typed(default, target, f"input '{input_name}'", check)
        params[input_name] = Param(default=default, help=check.text("description"), type=target)
    return params


def _typed(value: Any, target: type, what: str, check: Checker) -> Any:
    """A default checked against its input's type (an int is a float too; a text is a path)."""
    type_name = {"int": "an int", "str": "a str", "float": "a float", "bool": "a bool"}.get(
        target.__name__, "a path"
    )
    if isinstance(value, Located):
        raise check.error(f"{what}: default must be {type_name}, got {describe(value)}", "default")
    if target is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if target is Path and isinstance(value, str):
        return Path(value)
    if not isinstance(value, target) or (target is int and isinstance(value, bool)):
        raise check.error(f"{what}: default {value!r} is not {type_name}", "default")
    return value


def _flow_outputs(top: Checker, declared: dict[str | None, list[str]]) -> dict[str, tuple[str, str | None]]:
    node = top.mapping("outputs")
    if node is None:
        return {}
    result: dict[str, tuple[str, str | None]] = {}
    for name, expression in node.entries.items():
        check = Checker(top.file, "outputs", node)
        problem = f"flow output '{name}' must be one reference {{{{ steps.STEP.outputs.NAME }}}}"
        if not isinstance(expression, str):
            raise check.error(f"{problem}, got {describe(expression)}", name)
        try:
            found = templates.references(expression)
        except templates.TemplateError as exc:
            raise check.error(f"flow output '{name}': {exc}", name) from None
        if len(found) != 1 or found[0].text != expression.strip() or found[0].step is None:
            raise check.error(problem, name)
        reference = found[0]
        if reference.step not in declared:
            raise check.error(f"flow output '{name}': {reference.text} names an unknown step", name)
        outputs = declared[reference.step]
        if reference.output is not None and reference.output not in outputs:
            raise check.error(
                f"flow output '{name}': step '{reference.step}' declares no output '{reference.output}'", name
            )
        result[str(name)] = (str(reference.step), reference.output)
    return result
