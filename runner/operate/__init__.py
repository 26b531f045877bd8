"""Provides what operates flows over time, beyond one run: loops (`loop`), schedules and their pure
due-time decisions (`schedule`), the scheduler process (`serve`), frozen releases (`releases`), and
hooks run in their own processes (`hooks`, `hook_worker`).

The CLI (`runner.cli.operate`, `runner.cli.run`) is their only caller; none of them imports the TUI.
"""
