"""Provides `select_steps`: which steps a run covers, from `--only`, `--from` and `--to`."""

from __future__ import annotations

from collections.abc import Sequence

from dsl.errors import FlowError
from dsl.graph import Graph


def _check(graph: Graph, option: str, names: Sequence[str]) -> None:
    for name in names:
        if name not in graph.nodes:
            known = ", ".join(graph.nodes)
            raise FlowError(f"{option} {name}: no step named '{name}' (steps: {known})")


def select_steps(
    graph: Graph,
    only: Sequence[str] = (),
    from_steps: Sequence[str] = (),
    to_steps: Sequence[str] = (),
) -> list[str]:
    """The steps in scope, in graph order.

    `--only S` (repeatable) is exactly S; `--from S` is S and its descendants; `--to S` is S and its
    ancestors; combined, the intersection. Steps upstream of the scope must come from the cache.

    Raises:
        FlowError: a name that is no step, or a combination that selects nothing.
    """
    _check(graph, "--only", only)
    _check(graph, "--from", from_steps)
    _check(graph, "--to", to_steps)
    if not (only or from_steps or to_steps):
        return list(graph.order)
    scope = set(graph.nodes)
    if only:
        scope &= set(only)
    if from_steps:
        scope &= set().union(*({s} | graph.descendants(s) for s in from_steps))
    if to_steps:
        scope &= set().union(*({s} | graph.ancestors(s) for s in to_steps))
    if not scope:
        raise FlowError("--only/--from/--to select no step together")
    return [name for name in graph.order if name in scope]


def external_inputs(graph: Graph, scope: Sequence[str]) -> list[str]:
    """Steps outside the scope whose outputs the scope needs (transitively), in graph order."""
    if len(scope) == len(graph.nodes):  # the whole flow (a scope is distinct steps of the graph)
        return []
    inside = set(scope)
    needed: set[str] = set()
    todo = [u for name in scope for u in graph.nodes[name].upstream if u not in inside]
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo.extend(u for u in graph.nodes[name].upstream if u not in inside)
    for name in needed:
        between = graph.ancestors(name) & inside
        if between:
            raise FlowError(
                f"step '{name}' lies between selected steps ({', '.join(sorted(between))} before it) "
                f"but is not selected; select it too (--only {name}) or use --from/--to"
            )
    return [name for name in graph.order if name in needed]
