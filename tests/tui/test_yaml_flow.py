"""`flow tui` on a YAML flow with a command step that prints a connection's secret: the DAG, the logs
and the details show the steps, and the secret only as `***`."""

from __future__ import annotations

import textwrap

from tests.tui.conftest import ready, run_done, wait_for
from tui.widgets.dag import DagView
from tui.widgets.logs import LogView

SIZE = (120, 36)
SECRET = "tui-s3cret-77e1"


async def test_a_yaml_flow_runs_in_the_tui_and_its_secret_shows_only_as_stars(tmp_path, app_for, monkeypatch):
    monkeypatch.setenv("FLOW_TUI_TOKEN", SECRET)
    (tmp_path / "flow.toml").write_text(
        '[connections.api]\nAPI_TOKEN = { env = "FLOW_TUI_TOKEN", secret = true }\n'
    )
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            steps:
              - name: fetch
                command: [sh, -c, 'echo "token $API_TOKEN"; echo "$API_TOKEN" > $FLOW_OUTPUTS/token']
                connections: [api]
                outputs: [token]
              - name: use
                command: [sh, -c, 'echo "got {{ steps.fetch.outputs.token }}"']
            """
        )
    )
    app = app_for(path)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        assert [list(c) for c in pane.query_one(DagView).layout_.columns] == [["fetch"], ["use"]]
        await pilot.press("r")
        await run_done(pilot, pane)
        state = flow.viewed_state
        assert state is not None
        assert {name: info.status for name, info in state.steps.items()} == {
            "fetch": "succeeded",
            "use": "succeeded",
        }
        # The logs followed whichever step ran last (how events were batched decides it): show fetch.
        await pilot.press("g", "home")
        log = pane.query_one(LogView)
        await wait_for(pilot, lambda: log.buffer.lines == ["token ***"], what=lambda: log.buffer.lines)
        shown = repr(vars(state)) + repr(flow.history)
        assert SECRET not in shown and "***" in shown


def test_flow_tui_dir_lists_yaml_flows_beside_python_flows(tmp_path):
    from runner.flow_files import find_flows

    (tmp_path / "train.py").write_text("from dsl import step\n")
    (tmp_path / "pipeline.yaml").write_text("name: p\nsteps:\n  - name: a\n    command: [true]\n")
    (tmp_path / "ci.yml").write_text("jobs:\n  test:\n    steps:\n      - run: pytest\n")
    assert [p.name for p in find_flows(tmp_path)] == ["pipeline.yaml", "train.py"]
