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
    steps, params = len(graph.nodes), len(graph.params)
    lines = [
        f"flow {loaded.name}: {steps} step{'' if steps == 1 else 's'}, "
        f"{params} parameter{'' if params == 1 else 's'}"
    ]
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


def _shape_marks(loaded: LoadedFlow, name: str) -> list[str]:
    """What changes when and how often a step runs: drawn on the node, since it belongs to the step,
    not to any one of its incoming edges."""
    step = loaded.graph.nodes[name].step
    marks = ["when"] if step.when is not None else []
    if step.trigger != "all_succeeded":
        marks.append(f"trigger {step.trigger}")
    if step.foreach:
        marks.append(f"foreach {step.foreach}")
    return marks


def _label(loaded: LoadedFlow, name: str, separator: str) -> str:
    marks = _shape_marks(loaded, name)
    return name + (separator + ", ".join(marks) if marks else "")


def as_mermaid(loaded: LoadedFlow) -> str:
    """Conditional steps (`when=`) are hexagons; every mark is in the node's label; edges carry data."""
    lines = ["flowchart LR"]
    for name, node in loaded.graph.nodes.items():
        label = _label(loaded, name, "<br/>").replace('"', "#quot;")
        shape = f'{name}{{{{"{label}"}}}}' if node.step.when is not None else f'{name}["{label}"]'
        lines.append(f"  {shape}")
    for name, node in loaded.graph.nodes.items():
        for upstream in node.upstream:
            lines.append(f"  {upstream} --> {name}")
    return "\n".join(lines)


def as_dot(loaded: LoadedFlow) -> str:
    """As `as_mermaid`: a conditional step is drawn rounded and doubled, its marks in its label."""
    lines = [f'digraph "{_dot(loaded.name)}" {{', "  rankdir=LR;", "  node [shape=box];"]
    for name, node in loaded.graph.nodes.items():
        attrs = [f'label="{_dot(_label(loaded, name, chr(10)))}"']
        if node.step.when is not None:
            attrs.append("style=rounded, peripheries=2")
        lines.append(f'  "{_dot(name)}" [{", ".join(attrs)}];')
    for name, node in loaded.graph.nodes.items():
        for upstream in node.upstream:
            lines.append(f'  "{_dot(upstream)}" -> "{_dot(name)}";')
    lines.append("}")
    return "\n".join(lines)


def _dot(text: str) -> str:
    """Text inside a DOT double-quoted string."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


FORMATS = {"text": as_text, "mermaid": as_mermaid, "dot": as_dot}
