"""Provides the TUI's key map: every action with its key, label and help, in one table.

One table feeds the screen's bindings (every key works wherever focus is), the command palette
(every action is there, with its key), the help screen (`?`) and the footer. The footer shows, first,
the keys of the focused pane — each widget repeats the pane actions that matter to it as bindings
shown in the footer — then the few global ones flagged `footer` here.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class Action:
    """A screen action.

    Attributes:
        key: Textual key name(s), comma-separated.
        action: the screen action (`run`, `tab('logs-tab')`, ...).
        label: the footer and help label.
        help: the command palette's description.
        footer: shown in the footer whatever has focus.
        display: how the key is written (default: Textual's display of the first key).
    """

    key: str
    action: str
    label: str
    help: str
    footer: bool = False
    display: str | None = None


ACTIONS: list[Action] = [
    Action("r", "run", "Run", "Run the flow (cached steps are reused)", footer=True),
    Action("e", "rerun_step", "Re-run step", "Re-run the selected step and its descendants"),
    Action("f", "force", "Force", "Force re-run every step, ignoring the cache"),
    Action("s", "stop", "Stop", "Stop the running run (kills its running steps)", footer=True),
    Action("u", "resume", "Resume", "Resume the selected failed or stopped run with its parameters"),
    Action("a", "rerun_past", "Re-run past", "Re-run the selected past run with its parameters"),
    Action("d", "delete_run", "Delete run", "Delete the selected run and its logs"),
    Action("p", "edit_params", "Params", "Edit the flow's parameters before a run"),
    Action("w", "toggle_watch", "Watch", "Toggle hot reload (re-run on save)"),
    Action("v", "view_live", "Live", "View the latest run and follow new runs"),
    Action(
        "P",
        "toggle_pin",
        "Pin step",
        "Keep the logs on the selected step instead of following the running one",
    ),
    Action("slash", "search", "Search", "Search the selected step's logs"),
    Action("n", "search_next", "Next match", "Next search match in the logs"),
    Action("N", "search_previous", "Prev match", "Previous search match in the logs"),
    Action("x", "jump_to_error", "Error", "Jump to the first error in the step's logs"),
    Action("F", "toggle_follow", "Follow end", "Toggle following the end of the logs"),
    Action("1", "tab('logs-tab')", "Logs", "Show the selected step's logs"),
    Action(
        "2,i",
        "tab('details-tab')",
        "Details",
        "Show the selected step's details (status, why, error, metrics)",
    ),
    Action("3", "tab('history-tab')", "History", "Show the run history (view, compare, resume, delete runs)"),
    Action("g", "focus_dag", "DAG", "Focus the DAG"),
    Action("z", "zoom", "Zoom", "Give the DAG the whole screen (again: back)"),
    Action("E", "toggle_edges", "All edges", "Draw every data edge, or only those the run order needs"),
    Action("m", "mark_run", "Mark run", "Mark the history row under the cursor to compare it"),
    Action("c", "compare_runs", "Compare", "Compare the marked run with the history row under the cursor"),
    Action("D", "code_diff", "Code diff", "Show the code change behind the selected step's next re-run"),
    Action(
        "b",
        "debug_step",
        "Debug",
        "Re-execute the selected step of the viewed run under pdb, in the terminal (flow debug)",
    ),
    Action(
        "question_mark,f1",
        "help",
        "Help",
        "List the keys of the focused pane and the global ones",
        footer=True,
    ),
]


def screen_bindings() -> list[Binding]:
    """The screen's bindings: every action, footer-visible only where flagged."""
    return [
        Binding(a.key, a.action, a.label, show=a.footer, key_display=a.display, tooltip=a.help)
        for a in ACTIONS
    ]


def pane_bindings(*names: str, quiet: tuple[str, ...] = ()) -> list[Binding]:
    """Bindings a widget repeats for screen actions: shown in the footer while it has focus
    (those in `quiet` only in the help: an 80-column footer has room for about eight keys)."""
    chosen = {a.action: a for a in ACTIONS}
    return [
        Binding(
            a.key,
            f"screen.{a.action}",
            a.label,
            show=a.action not in quiet,
            key_display=a.display,
            tooltip=a.help,
        )
        for a in (chosen[n] for n in names)
    ]
