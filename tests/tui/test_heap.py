"""The cyclic collector stays off the first paint's path: it never runs while a drawing is laid out,
and what the TUI loads before it starts is frozen at once instead of walked by a collection."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import tui.data.layout as layout_module
from benchmarks.tui import big_flow
from dsl import load_flow
from tests.helpers_core import WATCH_COLLECTIONS
from tui.data.layout import fit_layout

REPO = Path(__file__).resolve().parents[2]


def layered(path: Path, columns: int, width: int) -> tuple[list[list[str]], dict[str, list[str]]]:
    """The layers and upstream steps of `big_flow(columns, width)`, loaded from a file at `path`."""
    path.write_text(big_flow(columns, width), encoding="utf-8")
    graph = load_flow(path).graph
    return [list(layer) for layer in graph.layers()], {
        n: list(node.upstream) for n, node in graph.nodes.items()
    }


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """Generations collected while `layout_dag` runs (the collector is on for the test)."""
    seen: list[int] = []
    inside = [False]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and inside[0]:
            seen.append(info["generation"])

    real = layout_module.layout_dag

    def watched(*args, **kwargs):  # type: ignore[no-untyped-def]
        inside[0] = True
        try:
            return real(*args, **kwargs)
        finally:
            inside[0] = False

    was_enabled = gc.isenabled()
    gc.enable()
    gc.callbacks.append(callback)
    layout_module.layout_dag = watched
    try:
        yield seen
    finally:
        layout_module.layout_dag = real
        gc.callbacks.remove(callback)
        if not was_enabled:
            gc.disable()


def test_the_collector_never_runs_while_a_drawing_is_laid_out(tmp_path: Path, collections: list[int]) -> None:
    layers, upstream = layered(tmp_path / "big.py", 40, 50)
    drawing = fit_layout(layers, upstream, width=92, height=30)
    assert len(drawing.boxes) == 2000  # laid out whole
    assert collections == []  # a drawing this size made the collector run dozens of times
    assert gc.isenabled()


SCRIPT = WATCH_COLLECTIONS + textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import tui.app

    gc.enable()
    real = tui.app.open_session

    def opening(*args, **kwargs):
        watching[0] = True  # from the load to the end of make_app
        return real(*args, **kwargs)

    tui.app.open_session = opening
    frozen = gc.get_freeze_count()
    app = tui.app.make_app(Path(sys.argv[1]), Path(sys.argv[2]), 1, watch=False)
    watching[0] = False
    steps = len(next(iter(app.preloaded.values())).loaded.graph.nodes)
    print(json.dumps({"collections": seen, "frozen": gc.get_freeze_count() - frozen, "steps": steps}))
    app.close_engine()
    """
)


def test_the_flow_loaded_before_the_app_starts_is_frozen_not_collected(tmp_path: Path) -> None:
    path = tmp_path / "big.py"
    path.write_text(big_flow(40, 50), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path), str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["steps"] == 2000
    assert result["collections"] == []  # the load's 2,000 steps were walked by a collection after it
    assert result["frozen"] > 2000 * 5  # each step, its function, its graph node ... left out of later ones
