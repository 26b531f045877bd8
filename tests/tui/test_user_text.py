"""User- and step-supplied text in the TUI is text: never markup, never terminal control.

Each test drives the real app (Pilot) on real flow files, a real store and worker processes: the
command palette, a flow whose name and load error hold markup-looking brackets, step output with
brackets and escape sequences, the comparison of two runs with long values, and the log pane of a
step that is still running.
"""

from __future__ import annotations

from pathlib import Path

from tests.tui.conftest import pane_of, ready, run_done, screen_text, wait_for, write_flow
from tui.screens.compare import CompareScreen
from tui.widgets.dag import DagView
from tui.widgets.history import RunHistory
from tui.widgets.logs import LogView

SIZE = (120, 36)

MARKUP_NAME = """
from dsl import Flow, step

flow = Flow("etl [/data/in]")


@step
def extract():
    print("[epoch 3] loss 0.25")
    print("[bold red]x[/] regex [a-z]+ [/]")
    print("title\\x1b]0;pwned\\x07 clear\\x1b[2J done")
    return 1
"""

BROKEN = """
from dsl import step

raise KeyError("shape [3, 4] got [/data/x] in [columns]")


@step
def never():
    return 1
"""


async def test_the_command_palette_opens_and_runs_a_command(simple_flow, app_for):
    app = app_for(simple_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: app.screen.__class__.__name__ == "CommandPalette", what="the palette")
        await pilot.press(*"run")
        await wait_for(pilot, lambda: "Run (r)" in screen_text(app), what=lambda: screen_text(app))
        await pilot.press("enter")
        await run_done(pilot, pane)
        assert app.is_running
        assert flow.history[0].status == "succeeded"


async def test_markup_in_a_flow_name_a_load_error_and_step_output_shows_as_written(tmp_path, app_for):
    write_flow(tmp_path / "etl.py", MARKUP_NAME)
    write_flow(tmp_path / "broken.py", BROKEN)
    app = app_for(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.main is not None and app.main.pane is not None, what="a pane")
        broken = pane_of(app)
        assert broken.path.name == "broken.py"
        await wait_for(pilot, lambda: broken.controller.error is not None, what="the load error")
        await pilot.pause()
        shown = screen_text(app)
        assert "KeyError" in shown and "shape [3, 4] got [/data/x] in [columns]" in shown
        await pilot.press("down")
        await wait_for(pilot, lambda: pane_of(app).path.name == "etl.py", what="etl.py open")
        etl = pane_of(app)
        await wait_for(pilot, lambda: etl.controller.loaded is not None, what="etl loaded")
        etl.query_one(DagView).focus()
        await pilot.press("r")
        await run_done(pilot, etl)
        await pilot.pause()
        shown = screen_text(app)
        assert "etl [/data/in] · run #1" in shown
        assert "[epoch 3] loss 0.25" in shown
        assert "[bold red]x[/] regex [a-z]+ [/]" in shown
        assert "title␛]0;pwned␇ clear␛[2J done" in shown
        assert "\x1b" not in "".join(etl.query_one(LogView).buffer.lines)
        assert app.is_running


async def test_compare_shows_long_values_whole_and_highlights_only_real_differences(tmp_path, app_for):
    flow = write_flow(
        tmp_path / "long.py",
        """
from dsl import log_metric, step


@step
def fit(epochs: int = 3000, data: str = "s3://bucket/" + "d" * 120 + "/part-0001.parquet",
        score: float = 0.861234):
    log_metric("accuracy", score)
    log_metric("same", 0.5)
    return epochs
""",
    )
    app = app_for(flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await pilot.press("r")
        await run_done(pilot, pane)
        flow.commands.set_params({"epochs": "300", "score": "0.861236"})
        await pilot.press("r")
        await run_done(pilot, pane, 2)
        pane.show_tab("history-tab")
        table = pane.query_one(RunHistory)
        table.focus()
        await pilot.press("m", "down", "c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen), what="the comparison")
        await pilot.pause()
        shown = screen_text(app)
        row = {
            line.split()[2]: line for line in shown.splitlines() if " param " in line or " metric " in line
        }
        assert "3000" in row["epochs"] and " 300 " in row["epochs"]
        assert "0.861234" in row["score"] and "0.861236" in row["score"]
        assert "0.86123" in row["accuracy"] and "0.86124" not in row["accuracy"]
        assert "…" in row["data"]
        compare = app.screen
        differs = {name for kind, name, left, right in compare.compared if kind != "run" and left != right}
        assert differs == {"epochs", "score", "accuracy", "fit"}  # fit: the step, with its new output
        await pilot.press("down", "down", "down")  # the data row, cut in the table: shown whole below

        def whole() -> bool:
            squeezed = screen_text(app).replace("│", "").replace(" ", "").replace("\n", "")
            return "d" * 100 + "/part-0001.parquet" in squeezed

        await wait_for(pilot, whole, what=lambda: screen_text(app))


async def test_the_log_pane_of_a_running_step_grows_line_by_line(tmp_path, app_for):
    gate = tmp_path / "gate"
    flow = write_flow(
        tmp_path / "slowlog.py",
        f"""
import time
from pathlib import Path

from dsl import step


@step(cache=False)
def chatty():
    print("first line", flush=True)
    while not Path({str(gate)!r}).exists():
        time.sleep(0.01)
    print("second line", flush=True)
    print("third line", flush=True)
    while not Path({str(gate)!r} + "2").exists():
        time.sleep(0.01)
    return 1
""",
    )
    app = app_for(flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await pilot.press("r")
        await wait_for(pilot, lambda: "first line" in screen_text(app), what="the first line on screen")
        gate.touch()
        await wait_for(pilot, lambda: "third line" in screen_text(app), what=lambda: screen_text(app))
        shown = screen_text(app)
        assert "second line" in shown and flow.active, "the lines show while the step still runs"
        Path(str(gate) + "2").touch()
        await run_done(pilot, pane)
