"""Provides the flow graph as text, Mermaid and Graphviz DOT (`flow graph`)."""

from __future__ import annotations

from dsl.loader import LoadedFlow
from runner.text import visible


def _marks(loaded: LoadedFlow, name: str) -> str:
    step = loaded.graph.nodes[name].step
    marks = []
    if step.when is not None:
        marks.append("when")
    if step.foreach:
        marks.append(f"foreach {step.foreach}")
    if step.trigger != "all_succeeded":
        marks.append(f"trigger {step.trigger}")
    if step.retries:
        marks.append(f"retries {step.retries}")
    if step.timeout:
        marks.append(f"timeout {step.timeout:g}s")
    if not step.cache:
        marks.append("no cache")
    if step.inputs:
        marks.append(f"inputs {visible(' '.join(step.inputs), newlines=False)}")
    if step.env:
        marks.append(f"env {visible(' '.join(step.env), newlines=False)}")
    return f"  [{', '.join(marks)}]" if marks else ""


def as_text(loaded: LoadedFlow) -> str:
    graph = loaded.graph
    lines = [f"flow {loaded.name}: {len(graph.nodes)} steps, {len(graph.params)} parameters"]
    if loaded.description:
        lines.append(f"  {loaded.description}")
    width = max(len(n) for n in graph.nodes)
    for name, node in graph.nodes.items():
        arrow = f" ← {', '.join(node.upstream)}" if node.upstream else ""
        lines.append(f"  {name:<{width}}{arrow}{_marks(loaded, name)}")
    if graph.params:
        lines.append("parameters:")
        for spec in graph.params.values():
            default = "required" if spec.required else repr(spec.default)
            extra = f"  {spec.help}" if spec.help else ""
            choices = f" (one of {', '.join(map(repr, spec.choices))})" if spec.choices else ""
            lines.append(f"  {spec.name}: {spec.type.__name__} = {default}{choices}{extra}")
    return "\n".join(lines)


def as_mermaid(loaded: LoadedFlow) -> str:
    lines = ["flowchart LR"]
    for name, node in loaded.graph.nodes.items():
        shape = f"{name}{{{{{name}}}}}" if node.step.when is not None else f"{name}[{name}]"
        lines.append(f"  {shape}")
    for name, node in loaded.graph.nodes.items():
        for upstream in node.upstream:
            arrow = " -. when .-> " if node.step.when is not None else " --> "
            lines.append(f"  {upstream}{arrow}{name}")
    return "\n".join(lines)


def as_dot(loaded: LoadedFlow) -> str:
    lines = [f'digraph "{loaded.name}" {{', "  rankdir=LR;", "  node [shape=box];"]
    for name, node in loaded.graph.nodes.items():
        style = " [style=rounded, peripheries=2]" if node.step.when is not None else ""
        lines.append(f'  "{name}"{style};')
    for name, node in loaded.graph.nodes.items():
        for upstream in node.upstream:
            attrs = ' [style=dashed, label="when"]' if node.step.when is not None else ""
            lines.append(f'  "{upstream}" -> "{name}"{attrs};')
    lines.append("}")
    return "\n".join(lines)


FORMATS = {"text": as_text, "mermaid": as_mermaid, "dot": as_dot}
