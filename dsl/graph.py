"""Provides `build_graph`: the one pure function from steps and edges to a validated `Graph`.

Validation happens here, before any step runs: duplicate names, arguments that name no step and have
no default, cycles, unknown `foreach`/`when` names and conflicting parameter declarations all raise a
`FlowError` naming the file, line and step.
"""

from __future__ import annotations

import heapq
import inspect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dsl.errors import FlowError
from dsl.params import REQUIRED, Param
from dsl.step import Argument, Step
from dsl.wiring import Edge


@dataclass(frozen=True)
class ParamSpec:
    """A flow parameter: an argument of one or more steps that is not a step's output.

    Attributes:
        name: the argument name (what `-p name=value` sets).
        default: the default value, or `REQUIRED`.
        type: what a command-line string converts to.
        help: the `param(help=...)` text.
        choices: allowed values, if limited.
        steps: the steps that read it.
    """

    name: str
    default: Any
    type: type
    help: str = ""
    choices: tuple[Any, ...] | None = None
    steps: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "default": None if self.required else self.default,
            "required": self.required,
            "type": self.type.__name__,
            "help": self.help,
            "choices": list(self.choices) if self.choices is not None else None,
            "steps": list(self.steps),
        }


@dataclass
class Node:
    """One step in a graph.

    Attributes:
        step: the `Step` (function and options).
        inputs: argument name -> upstream step whose output it receives.
        params: argument names that are flow parameters.
        when_args: names the `when` predicate takes (upstream steps or parameters).
        upstream: every upstream step name (data edges, `>>` edges and `when` inputs), ordered.
        downstream: every downstream step name, ordered.
        conditional: True when the node has a `when` predicate.
    """

    step: Step
    inputs: dict[str, str] = field(default_factory=dict)
    params: list[str] = field(default_factory=list)
    when_args: list[str] = field(default_factory=list)
    upstream: list[str] = field(default_factory=list)
    downstream: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.step.name

    @property
    def conditional(self) -> bool:
        return self.step.when is not None


@dataclass
class Graph:
    """A validated DAG of steps in topological order.

    Attributes:
        nodes: step name -> node, in a topological order (upstream before downstream).
        params: flow parameters by name.
    """

    nodes: dict[str, Node]
    params: dict[str, ParamSpec]

    @property
    def order(self) -> list[str]:
        return list(self.nodes)

    def descendants(self, name: str) -> set[str]:
        """Every step reachable downstream of `name` (not including it)."""
        seen: set[str] = set()
        todo = list(self.nodes[name].downstream)
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(self.nodes[current].downstream)
        return seen

    def ancestors(self, name: str) -> set[str]:
        """Every step upstream of `name` (not including it)."""
        seen: set[str] = set()
        todo = list(self.nodes[name].upstream)
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(self.nodes[current].upstream)
        return seen

    def layers(self) -> list[list[str]]:
        """Steps grouped by their longest distance from a root: the columns of a left-to-right drawing."""
        depth: dict[str, int] = {}
        for name, node in self.nodes.items():
            depth[name] = 1 + max(map(depth.__getitem__, node.upstream)) if node.upstream else 0
        columns: list[list[str]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
        for name, d in depth.items():
            columns[d].append(name)
        return columns


def _param_type(argument: Argument, declared: Param | None, default: Any) -> type:
    if declared is not None and declared.type is not None:
        return declared.type
    annotation = argument.annotation
    if isinstance(annotation, type) and annotation is not inspect.Parameter.empty:
        return annotation
    if isinstance(annotation, str) and annotation in {"int", "float", "str", "bool", "list", "dict"}:
        return {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}[annotation]
    if default is not REQUIRED and default is not None:
        return type(default)
    return str


_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def build_graph(steps: Iterable[Step], edges: Iterable[Edge]) -> Graph:
    """Validate steps and edges and build the graph.

    Raises:
        FlowError: for a duplicate step name, an argument with no default that names no step, a
            variadic argument, a `foreach` or `when` naming nothing, a conflicting parameter or a cycle.
    """
    edge_list = list(edges)
    by_name = _steps_by_name(steps, edge_list)
    nodes: dict[str, Node] = {}
    params: dict[str, ParamSpec] = {}
    for name, item in by_name.items():
        node = Node(step=item)
        for argument in item.arguments:
            if argument.kind in _VARIADIC:
                raise FlowError(
                    f"*{argument.name} / **{argument.name} arguments are not supported in steps; "
                    "name each input",
                    file=item.file,
                    line=item.line,
                    step=name,
                )
            if argument.name in by_name and argument.name != name:
                node.inputs[argument.name] = argument.name
            else:
                params[argument.name] = _param(argument, item, params.get(argument.name))
                node.params.append(argument.name)
        if item.when is not None:
            node.when_args = _when_args(item, by_name, node.params)
        nodes[name] = node
    _link(nodes, edge_list)
    order = _topological_order(nodes, edge_list)
    return Graph(nodes={name: nodes[name] for name in order}, params=params)


def _steps_by_name(steps: Iterable[Step], edges: list[Edge]) -> dict[str, Step]:
    """Every step of the flow by name: those defined in it, then those only its `>>` edges name.

    Raises:
        FlowError: two different steps with one name.
    """
    by_name: dict[str, Step] = {}
    for item in steps:
        other = by_name.get(item.name)
        if other is not None and other is not item:
            raise FlowError(
                f"duplicate step name '{item.name}' (also defined at {other.file}:{other.line}); "
                "give one of them another name with @step(name=...)",
                file=item.file,
                line=item.line,
                step=item.name,
            )
        by_name[item.name] = item
    for edge in edges:
        for end in (edge.upstream, edge.downstream):
            other = by_name.get(end.name)
            if other is None:
                by_name[end.name] = end
            elif other is not end:
                raise FlowError(
                    f"'{end.name}' in this >> is not the step of that name defined at "
                    f"{other.file}:{other.line}",
                    file=edge.file,
                    line=edge.line,
                    step=end.name,
                )
    return by_name


def _param(argument: Argument, item: Step, previous: ParamSpec | None) -> ParamSpec:
    """The flow parameter a step's argument declares, merged with the same parameter of earlier steps.

    Raises:
        FlowError: an argument with no default that names no step, or a parameter declared with
            another default or type by an earlier step.
    """
    where: dict[str, Any] = {"file": item.file, "line": item.line, "step": item.name}
    declared = argument.default if isinstance(argument.default, Param) else None
    default = declared.default if declared is not None else argument.default
    if default is inspect.Parameter.empty:
        default = REQUIRED
        if declared is None:
            raise FlowError(
                f"argument '{argument.name}' has no default and names no step; "
                "give it a default, use param(...), or add a step with that name",
                **where,
            )
    spec = ParamSpec(
        name=argument.name,
        default=default,
        type=_param_type(argument, declared, default),
        help=declared.help if declared else "",
        choices=declared.choices if declared else None,
        steps=(item.name,),
    )
    if previous is None:
        return spec
    if previous.default != spec.default or previous.type is not spec.type:
        raise FlowError(
            f"parameter '{argument.name}' is declared with default "
            f"{spec.default!r} ({spec.type.__name__}) here but "
            f"{previous.default!r} ({previous.type.__name__}) in step "
            f"'{previous.steps[0]}'; a flow parameter needs one declaration",
            **where,
        )
    return ParamSpec(
        name=spec.name,
        default=spec.default,
        type=spec.type,
        help=previous.help or spec.help,
        choices=previous.choices or spec.choices,
        steps=(*previous.steps, item.name),
    )


def _when_args(item: Step, by_name: dict[str, Step], params: list[str]) -> list[str]:
    """The names the step's `when=` predicate takes: upstream steps or the step's own parameters.

    Raises:
        FlowError: the predicate's signature cannot be read, or one of its arguments names neither.
    """
    if item.when is None:
        return []
    try:
        when_signature = inspect.signature(item.when)
    except (TypeError, ValueError) as exc:
        raise FlowError(
            f"cannot read the when= predicate's signature: {exc}",
            file=item.file,
            line=item.line,
            step=item.name,
        ) from None
    for argument_name in when_signature.parameters:
        if argument_name not in by_name and argument_name not in params:
            raise FlowError(
                f"the when= predicate's argument '{argument_name}' names no step and no "
                "parameter of this step",
                file=item.file,
                line=item.line,
                step=item.name,
            )
    return list(when_signature.parameters)


def _link(nodes: dict[str, Node], edges: list[Edge]) -> None:
    """Draw every edge between nodes: data inputs, `when` inputs, then the `>>` edges, each once.

    Raises:
        FlowError: a step wired to run after itself.
    """

    linked: set[tuple[str, str]] = set()  # a step's upstream list is O(n) to search: a 10,000-wide join

    def link(upstream: str, downstream: str) -> None:
        if (upstream, downstream) not in linked:
            linked.add((upstream, downstream))
            nodes[downstream].upstream.append(upstream)
            nodes[upstream].downstream.append(downstream)

    for name, node in nodes.items():
        into = node.upstream
        for upstream in node.inputs.values():  # each once: an input's name is its argument's
            linked.add((upstream, name))
            into.append(upstream)
            nodes[upstream].downstream.append(name)
        for argument_name in node.when_args:
            if argument_name in nodes:
                link(argument_name, name)
    for edge in edges:
        if edge.upstream is edge.downstream:
            raise FlowError(
                f"step '{edge.upstream.name}' cannot run after itself",
                file=edge.file,
                line=edge.line,
                step=edge.upstream.name,
            )
        link(edge.upstream.name, edge.downstream.name)


def _topological_order(nodes: dict[str, Node], edges: list[Edge]) -> list[str]:
    """The order (`_definition_order`); a step left out of it is on a cycle, which `_check_cycles`
    then finds and reports (the order alone is half the work of a search first)."""
    order = _definition_order(nodes)
    if len(order) < len(nodes):
        _check_cycles(nodes, edges)
    return order


def _check_cycles(nodes: dict[str, Node], edges: list[Edge]) -> None:
    """Search for cycles depth-first: a back edge is a cycle, reported with its path."""
    state: dict[str, int] = {}
    for root in nodes:
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        while stack:
            name, index = stack.pop()
            if index == 0:
                state[name] = 1
                path.append(name)
            downstream = nodes[name].downstream
            if index < len(downstream):
                stack.append((name, index + 1))
                child = downstream[index]
                if state.get(child) == 1:
                    cycle = path[path.index(child) :] + [child]
                    _raise_cycle(nodes, edges, cycle)
                if child not in state:
                    stack.append((child, 0))
            else:
                state[name] = 2
                path.pop()


def _definition_order(nodes: dict[str, Node]) -> list[str]:
    """Topological order that keeps the order steps were defined in wherever the edges allow."""
    names = list(nodes)
    rank = {name: index for index, name in enumerate(names)}
    waiting = [len(node.upstream) for node in nodes.values()]
    ready = [index for index, count in enumerate(waiting) if count == 0]  # ranks: sorted, a heap
    order: list[str] = []
    while ready:
        name = names[heapq.heappop(ready)]
        order.append(name)
        for child in nodes[name].downstream:
            at = rank[child]
            waiting[at] -= 1
            if not waiting[at]:
                heapq.heappush(ready, at)
    return order


def _raise_cycle(nodes: dict[str, Node], edges: list[Edge], cycle: list[str]) -> None:
    closing = (cycle[-2], cycle[-1])
    file, line = nodes[closing[1]].step.file, nodes[closing[1]].step.line
    for edge in edges:
        if (edge.upstream.name, edge.downstream.name) == closing:
            file, line = edge.file, edge.line
    raise FlowError(
        f"cycle: {' >> '.join(cycle)}; remove one of these edges",
        file=file,
        line=line,
        step=closing[1],
    )
