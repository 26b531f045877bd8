"""Issue 14's findings outside the live terminal, one test each: a closed pipe (SIGPIPE), steps called
directly, wiring across flow files, cached fan-out metrics, and the smaller ones. Real `flow`
subprocesses and real stores on disk."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dsl import load_flow


def flow(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real `flow` in `cwd`, with the store `cwd/.flow`."""
    env = {**os.environ, "FLOW_STORE": str(cwd / ".flow")}
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def piped(*args: str, cwd: Path) -> subprocess.Popen[bytes]:
    """`flow ARGS | reader`: the test reads stdout as a pipe's reader would."""
    env = {**os.environ, "FLOW_STORE": str(cwd / ".flow")}
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def write(tmp_path: Path, text: str, name: str = "f.py") -> Path:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return project


def runs(project: Path) -> list[dict[str, object]]:
    done = flow("runs", "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# ----- item 5: a closed stdout ------------------------------------------------------------------

CHATTY = """
    import os, time
    from dsl import step

    @step(cache=False)
    def crash():
        for i in range(300):
            print("crash line", i)
        os._exit(3)                      # the worker dies

    @step(cache=False)
    def chatty():
        for i in range(6000):            # a minute of output unless the run is stopped
            print("chatty line", i, flush=True)
            time.sleep(0.01)
"""


def test_a_run_whose_reader_goes_away_stops_quietly_is_recorded_and_dies_of_sigpipe(tmp_path: Path) -> None:
    """`flow run f.py | head -40`, with a worker that crashes: no error per event, no run left
    running for ever; the run is recorded as cancelled and flow exits as killed by SIGPIPE (141)."""
    project = write(tmp_path, CHATTY)
    proc = piped("run", "f.py", "--workers", "2", cwd=project)
    assert proc.stdout is not None and proc.stderr is not None
    for _ in range(40):
        assert proc.stdout.readline()
    proc.stdout.close()  # what `head -40` does once it has its lines
    began = time.monotonic()
    code = proc.wait(timeout=30)
    stderr = proc.stderr.read().decode()
    assert code == -signal.SIGPIPE, (code, stderr)
    assert time.monotonic() - began < 10
    assert stderr == "", stderr
    assert runs(project)[0]["status"] == "cancelled"


def test_flow_logs_into_a_closed_pipe_ends_quietly_with_sigpipe(tmp_path: Path) -> None:
    project = write(
        tmp_path,
        """
        from dsl import step

        @step
        def loud():
            for i in range(20000):
                print("a log line long enough to fill a pipe's buffer quickly", i)
        """,
    )
    assert flow("run", "f.py", cwd=project).returncode == 0
    proc = piped("logs", "last", cwd=project)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=30) == -signal.SIGPIPE
    assert proc.stderr.read() == b""


# ----- items 10, 11, 12 -------------------------------------------------------------------------


def test_a_step_called_directly_gets_the_default_of_its_param_argument(tmp_path: Path) -> None:
    """The README's "unit-test a step by calling it": `collect(rows=10)` must not receive the
    `param(...)` marker for `scale`."""
    project = write(
        tmp_path,
        """
        from dsl import param, step

        @step
        def collect(rows: int = 5, scale: float = param(2.0, help="multiplier"), need: str = param(help="x")):
            return [r * scale for r in range(rows)], need
        """,
    )
    loaded = load_flow(project / "f.py")
    collect = loaded.graph.nodes["collect"].step
    assert collect(rows=3, need="n") == ([0.0, 2.0, 4.0], "n")
    assert collect(2, 10.0, "m") == ([0.0, 10.0], "m")
    with pytest.raises(TypeError, match="missing the required flow parameter 'need'"):
        collect(rows=1)


def test_importing_a_step_from_another_flow_file_does_not_bring_that_flows_wiring(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        from dsl import Flow, step

        flow = Flow("one")

        @step
        def load():
            return [1, 2]

        @step
        def extra():
            return 0

        @step
        def total():
            return 3

        load >> total
        extra >> total
        """,
        name="flow_one.py",
    )
    project = write(
        tmp_path,
        """
        from dsl import step
        from flow_one import load

        @step
        def double(load):
            return [x * 2 for x in load]
        """,
        name="flow_two.py",
    )
    two = load_flow(project / "flow_two.py")
    assert sorted(two.graph.nodes) == ["double", "load"]
    assert two.name == "flow_two"
    one = load_flow(project / "flow_one.py")
    assert sorted(one.graph.nodes["total"].upstream) == ["extra", "load"]


def test_a_cached_fan_out_item_shows_its_own_metrics_not_those_of_its_old_index(tmp_path: Path) -> None:
    project = write(
        tmp_path,
        """
        from dsl import log_metric, step

        @step
        def numbers(order: str = "up"):
            return [10, 20] if order == "up" else [20, 10]

        @step(foreach="numbers")
        def sq(numbers):
            log_metric("val", numbers)
            return numbers * numbers
        """,
    )
    assert flow("run", "f.py", cwd=project).returncode == 0
    again = flow("run", "f.py", "-p", "order=down", "--json", cwd=project)
    assert again.returncode == 0, again.stderr
    finished = {
        e["step"]: e for e in map(json.loads, again.stdout.splitlines()) if e["event"] == "step_finished"
    }
    assert finished["sq[0]"]["status"] == "cached" and finished["sq[0]"]["metrics"] == {"val": 20}
    assert finished["sq[1]"]["status"] == "cached" and finished["sq[1]"]["metrics"] == {"val": 10}


# ----- item 14: the smaller findings -------------------------------------------------------------

FAN = """
    from dsl import step

    @step
    def items():
        return [3, 1, 2, 5, 4]

    @step(foreach="items")
    def train(items):
        print("training on", items)
        return items * 10

    @step
    def report(train):
        raise ValueError("bad report \\x1b]0;t\\x07 [/x]")
"""


def test_logs_of_a_cached_step_come_from_the_run_that_computed_it(tmp_path: Path) -> None:
    project = write(tmp_path, FAN)
    assert flow("run", "f.py", cwd=project).returncode == 1
    assert flow("run", "f.py", cwd=project).returncode == 1
    shown = flow("logs", "last", "train[4]", cwd=project)
    assert shown.returncode == 0
    assert shown.stdout.rstrip().endswith("training on 4"), shown
    assert (
        "train[4] was cached in run #2: its output and these lines are from run #1 (train[4])" in shown.stderr
    )


def test_show_lists_fan_out_items_by_index_and_a_failed_steps_traceback(tmp_path: Path) -> None:
    project = write(tmp_path, FAN)
    assert flow("run", "f.py", "--workers", "4", cwd=project).returncode == 1
    shown = flow("show", "last", cwd=project).stdout
    names = [line.split()[1] for line in shown.splitlines() if line.startswith("  ") and "train[" in line]
    assert names == [f"train[{i}]" for i in range(5)], shown
    assert "      Traceback (most recent call last):" in shown
    assert "ValueError: bad report ␛]0;t␇ [/x]" in shown and "\x1b" not in shown
    as_json = json.loads(flow("show", "last", "--json", cwd=project).stdout)
    assert [s["name"] for s in as_json["steps"] if s["name"].startswith("train[")] == names
    logs = flow("logs", "last", "report", cwd=project).stdout
    assert "Traceback (most recent call last):" in logs and "ValueError: bad report ␛]0;t␇ [/x]" in logs


def test_runs_table_shows_a_newline_in_a_parameter_as_a_symbol_on_one_line(tmp_path: Path) -> None:
    project = write(
        tmp_path,
        """
        from dsl import step

        @step
        def greet(name: str = "x"):
            return name
        """,
    )
    assert flow("run", "f.py", "-p", "name=two\nlines\x1b[2J", cwd=project).returncode == 0
    table = flow("runs", cwd=project).stdout.splitlines()
    assert len(table) == 2, table
    assert table[1].endswith("name=two␊lines␛[2J")


def test_a_cached_step_line_does_not_say_cached_twice(tmp_path: Path) -> None:
    project = write(tmp_path, FAN.replace("raise ValueError", "return 1 or ValueError"))
    assert flow("run", "f.py", cwd=project).returncode == 0
    again = flow("run", "f.py", cwd=project).stdout
    assert "  ≡ items cached (same fingerprint as run #1)" in again.splitlines(), again


def test_the_summary_of_a_large_run_names_ten_steps_and_counts_the_rest(tmp_path: Path) -> None:
    """A 5,000-step run's summary line named every step (40 KB on one line); a run of twelve or fewer
    still names them all (here every step of a new chain of twelve: its first step changed)."""

    def chain(n: int) -> str:
        steps = [
            f"@step\ndef s{i}({f's{i - 1}' if i else ''}):\n    return {f's{i - 1} + 1' if i else 0}\n"
            for i in range(n)
        ]
        return "from dsl import step\n\n\n" + "\n\n".join(steps)

    project = write(tmp_path, chain(30))
    summary = flow("run", "f.py", cwd=project).stdout.splitlines()[-1]
    named = ", ".join(f"s{i}" for i in range(10))
    assert re.fullmatch(rf"run #1 succeeded in [\d.]+s: 30 succeeded \(ran: {named} and 20 more\)", summary)
    (project / "f.py").write_text(chain(12).replace("return 0", "return -1"), encoding="utf-8")
    summary = flow("run", "f.py", cwd=project).stdout.splitlines()[-1]
    assert summary.endswith(f"(ran: {', '.join(f's{i}' for i in range(12))})"), summary


def test_an_upstream_without_result_names_the_step_once_and_uses_up_no_run_number(tmp_path: Path) -> None:
    project = write(tmp_path, FAN)
    rejected = flow("run", "f.py", "--only", "report", cwd=project)
    assert rejected.returncode == 2
    assert rejected.stderr.startswith(
        "flow: error: step 'items': it is upstream of the selected steps but has no cached result"
    ), rejected.stderr
    assert rejected.stderr.count("'items'") == 1
    assert flow("run", "f.py", cwd=project).returncode == 1
    assert [r["id"] for r in runs(project)] == [1]
    assert flow("show", "1", cwd=project).returncode == 0


def test_an_unknown_parameter_gets_a_did_you_mean(tmp_path: Path) -> None:
    project = write(
        tmp_path,
        """
        from dsl import step

        @step
        def fit(learning_rate: float = 0.1, epochs: int = 3):
            return learning_rate * epochs
        """,
    )
    done = flow("run", "f.py", "-p", "learning_rat=0.2", cwd=project)
    assert done.returncode == 2
    assert "unknown parameter 'learning_rat' (did you mean 'learning_rate'?" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("p.json", b'{"epochs": "\xff\xfe"}', "the params file is not UTF-8 text"),
        ("p.json", b"[" * 100_000 + b"]" * 100_000, "invalid JSON: nested too deeply"),
        ("p.toml", b"x = " + b"[" * 100_000 + b"]" * 100_000, "invalid TOML: nested too deeply"),
    ],
    ids=["invalid-utf8", "deep-json", "deep-toml"],
)
def test_a_bad_params_file_is_one_line_and_exit_2(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    project = write(
        tmp_path,
        """
        from dsl import step

        @step
        def fit(epochs: int = 3):
            return epochs
        """,
    )
    (project / name).write_bytes(content)
    done = flow("run", "f.py", "--params", name, cwd=project)
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_deeply_nested_list_parameter_value_is_one_line_and_exit_2(tmp_path: Path) -> None:
    project = write(
        tmp_path,
        """
        from dsl import step

        @step
        def fit(layers: list = [1]):
            return layers
        """,
    )
    done = flow("run", "f.py", "-p", "layers=" + "[" * 20_000 + "]" * 20_000, cwd=project)
    assert done.returncode == 2
    assert "parameter 'layers': the value is nested too deeply to be a list" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_and_graph_count_in_the_singular_when_there_is_one(tmp_path: Path) -> None:
    project = write(
        tmp_path,
        """
        from dsl import step

        @step
        def only(rows: int = 1):
            return rows
        """,
    )
    assert flow("check", "f.py", cwd=project).stdout.startswith("ok: f has 1 step and 1 parameter (rows=1)")
    assert flow("graph", "f.py", cwd=project).stdout.startswith("flow f: 1 step, 1 parameter")


def test_mermaid_and_dot_show_when_trigger_and_foreach_on_the_step_not_its_edges(tmp_path: Path) -> None:
    project = write(
        tmp_path,
        """
        from dsl import step

        @step
        def a():
            return [1, 2]

        @step(foreach="a")
        def b(a):
            return a

        @step(when=lambda a: True, trigger="all_done")
        def c(a, b):
            return 1
        """,
    )
    mermaid = flow("graph", "f.py", "--format", "mermaid", cwd=project).stdout.splitlines()
    assert '  b["b<br/>foreach a"]' in mermaid
    assert '  c{{"c<br/>when, trigger all_done"}}' in mermaid
    assert "  a --> c" in mermaid and "  b --> c" in mermaid
    dot = flow("graph", "f.py", "--format", "dot", cwd=project).stdout
    assert '"b" [label="b\\nforeach a"];' in dot
    assert '"c" [label="c\\nwhen, trigger all_done", style=rounded, peripheries=2];' in dot
    assert '"a" -> "c";' in dot and 'label="when"' not in dot


def test_version_and_short_help(tmp_path: Path) -> None:
    from importlib.metadata import version

    shown = flow("--version", cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout == f"flow {version('flowdsl')}\n"
    short = flow("-h", cwd=tmp_path)
    assert short.returncode == 0 and short.stdout.startswith("Usage: ") and "  run " in short.stdout
    assert " run [OPTIONS]" in flow("run", "-h", cwd=tmp_path).stdout


def test_a_fifo_named_like_a_flow_neither_hangs_the_tui_listing_nor_a_run(tmp_path: Path) -> None:
    from runner.flow_files import find_flows

    project = write(tmp_path, "from dsl import step\n\n@step\ndef a():\n    return 1\n")
    os.mkfifo(project / "pipe.py")
    assert find_flows(project) == [project / "f.py"]
    done = flow("run", "pipe.py", cwd=project, timeout=30)
    assert done.returncode == 2 and "is not a regular file" in done.stderr


def test_waiting_for_another_process_computing_the_same_step_is_said_once(tmp_path: Path) -> None:
    """Two runners, one store: the second waits for the first's execution of `slow`. It used to
    repeat its `waiting` line at every poll (10 a second), even in `--json`."""
    project = write(
        tmp_path,
        """
        import os, time
        from pathlib import Path
        from dsl import step

        @step
        def slow():
            Path("started").touch()
            while not Path("release").exists():
                time.sleep(0.01)
            return 1
        """,
    )
    first = piped("run", "f.py", "--json", cwd=project)
    deadline = time.monotonic() + 60
    while not (project / "started").exists():
        assert time.monotonic() < deadline and first.poll() is None, "the first run never started its step"
        time.sleep(0.01)
    second = piped("run", "f.py", "--json", cwd=project)
    assert second.stdout is not None
    waiting = []
    for raw in second.stdout:
        event = json.loads(raw)
        if event["event"] == "step_started":
            waiting.append(event["reason"])
            break
    time.sleep(1.0)  # an observation window: ~10 polls of the shared store happen in it
    (project / "release").touch()
    rest = [json.loads(raw) for raw in second.stdout]
    assert first.wait(60) == 0 and second.wait(60) == 0
    waiting += [e["reason"] for e in rest if e["event"] == "step_started"]
    assert len(waiting) == 1 and waiting[0].startswith("waiting: "), waiting


class _Exited(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


@pytest.mark.parametrize("command", [["runs"], ["show", "1"], ["gc", "--dry-run"]])
def test_ctrl_c_inside_a_typer_command_exits_130_not_0(monkeypatch, capsys, command) -> None:
    """Typer (outside standalone mode) returns Ctrl-C as exit code 130 instead of raising it: the
    entry point must not take that for success. The Ctrl-C is raised where the command opens its
    store: a real one cannot be timed to land inside a command before it installs its own handling."""
    from runner.cli import common, exits

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    def exit_now(code: int) -> None:
        raise _Exited(code)

    for module in (common, *_modules_importing_open_store()):
        monkeypatch.setattr(module, "open_store", interrupted)
    monkeypatch.setattr(exits, "_exit_now", exit_now)
    monkeypatch.setattr(sys, "argv", ["flow", *command])
    # The entry point lets a command that only prints die of SIGPIPE (`flow runs | head`): in this
    # process that would outlast the test, and a later test's runner, writing to a worker that had
    # just crashed, died of it instead of reading EPIPE (the xdist worker went down, status 141).
    previous = signal.getsignal(signal.SIGPIPE)
    try:
        with pytest.raises(_Exited) as ended:
            exits.main()
    finally:
        signal.signal(signal.SIGPIPE, previous)
    assert ended.value.code == 130
    assert "flow: interrupted" in capsys.readouterr().err


def _modules_importing_open_store() -> list[object]:
    import runner.cli.history
    import runner.cli.maintenance

    return [runner.cli.history, runner.cli.maintenance]
