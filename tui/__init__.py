"""flow's terminal UI (Textual): the DAG, step logs and details, run history and actions.

Only `flow tui` imports this package; `dsl` and `runner` never do. Entry point: `tui.app.run_tui`.
"""
