"""Helpers for the core suite: side-effect logs that prove a step really executed, store peeking,
worker-process discovery and polling without sleeps-as-assertions."""

from __future__ import annotations

import builtins
import json
import os
import select
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PRELUDE = """\
import os
import time

from dsl import Flow, log_metric, param, step

LOG = {log!r}


def mark(name):
    with open(LOG, "a") as handle:
        handle.write(f"{{name}} {{time.time()!r}}\\n")
"""


def prelude(log: Path) -> str:
    """The top of a test flow: imports and `mark(name)`, which appends a line to `log`."""
    return PRELUDE.format(log=str(log))


def flow_source(log: Path, body: str) -> str:
    """A whole flow file: the prelude, then `body` (dedented)."""
    return prelude(log) + "\n\n" + textwrap.dedent(body)


def executed(log: Path) -> list[str]:
    """The names `mark` recorded, in order (empty if nothing ran)."""
    if not log.exists():
        return []
    return [line.split()[0] for line in log.read_text().splitlines() if line.strip()]


def marks(log: Path) -> list[tuple[str, float]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        if line.strip():
            name, ts = line.split()[:2]
            out.append((name, float(ts)))
    return out


def reset(log: Path) -> None:
    log.unlink(missing_ok=True)


def steps_of(run: Any) -> dict[str, Any]:
    """name -> StepRecord for a RunRecord."""
    return {s.name: s for s in run.steps}


def statuses(run: Any) -> dict[str, str]:
    return {s.name: s.status for s in run.steps}


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.02) -> Any:
    """Poll until `predicate()` is truthy; return its value, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


def calls_to(
    monkeypatch: Any, target: Any, name: str, noted: Callable[..., Any] = lambda first, *rest: first
) -> list[Any]:
    """Record the calls to `target.name` from now on (a module's function, a class's method, or a
    builtin as the module `target` sees it), as `noted(*args)` each (by default the first argument),
    in order; each call still goes to the real one."""
    real = getattr(target, name, None) or getattr(builtins, name)
    calls: list[Any] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append(noted(*args))
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, recording, raising=False)
    return calls


def flowcode_compiles(monkeypatch: Any) -> list[str]:
    """The texts `dsl.flowcode` compiles from now on (its flow-file parts), in order."""
    from dsl import flowcode

    return calls_to(monkeypatch, flowcode, "compile")


def db_rows(store_dir: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the store's SQLite directly (a separate connection, as another process would)."""
    db = store_dir / "flow.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def set_schema(store_dir: Path, version: int, *undo: str) -> None:
    """Make the store on disk read as schema `version` (an older store, or one from a newer flow):
    run the `undo` statements (dropping what the later versions added), then set the version, in one
    transaction."""
    conn = sqlite3.connect(store_dir / "flow.db")
    try:
        with conn:
            for statement in undo:
                conn.execute(statement)
            conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))
    finally:
        conn.close()


def step_status_in_db(store_dir: Path, step: str) -> list[str]:
    sql = "SELECT status FROM steps WHERE name=? ORDER BY run_id"
    return [r[0] for r in db_rows(store_dir, sql, (step,))]


IMPORTERS_LOG = "FLOWTEST_IMPORTERS"
"""The variable naming the file `importers_library` appends each importing worker's pid to."""


def install_library(directory: Path, name: str, source: str) -> Path:
    """Write module `name` with `source` into `directory`, installed as far as flow can tell (a
    `*.dist-info/RECORD` lists it: `dsl.locality` counts it a library). Returns `directory`, to put on
    the path."""
    (directory / f"{name}-1.0.dist-info").mkdir(parents=True)
    (directory / f"{name}-1.0.dist-info" / "RECORD").write_text(f"{name}.py,,\n")
    (directory / f"{name}.py").write_text(source)
    return directory


def importers_library(directory: Path, name: str) -> Path:
    """`install_library` of a library that appends the pid of each worker process importing it to the
    file `$FLOWTEST_IMPORTERS` names (other processes import it silently)."""
    return install_library(
        directory,
        name,
        "import os\nimport sys\n\n"
        'if "runner.executors.worker" in sys.orig_argv:\n'
        f'    with open(os.environ["{IMPORTERS_LOG}"], "a") as log:\n'
        '        log.write(f"{os.getpid()}\\n")\n',
    )


def importers(log: Path) -> list[int]:
    """The pids `importers_library` wrote to `log` (each worker that imported it, in order)."""
    return [int(pid) for pid in log.read_text().split()] if log.exists() else []


def worker_pids(marker: str) -> list[int]:
    """Live `runner.executors.worker` processes whose environment carries FLOW_TEST_MARKER=marker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if b"runner.executors.worker" not in cmdline:
                continue
            environ = (entry / "environ").read_bytes()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if f"FLOW_TEST_MARKER={marker}".encode() not in environ.split(b"\0"):
            continue
        if "\nState:\tZ" in status:
            continue
        found.append(int(entry.name))
    return found


def pid_alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def json_or_fail(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:  # pragma: no cover - diagnostic
        raise AssertionError(f"not JSON: {exc}\n{text}") from None


def readable_within(fd: int, seconds: float) -> bool:
    """Whether `fd` becomes readable within `seconds` (poll: a worker that has run many tests may hold
    descriptors above select()'s limit of 1024)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(seconds * 1000))


def files_open_under(directory: Path) -> list[str]:
    """The files under `directory` this process holds open (from /proc/self/fd)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            found.append(target)
    return found


def task_result(executor: Any, task_id: str, timeout: float = 60.0) -> Any:
    """Wait for `task_id`'s result from a real executor (`TaskResult`); its other events are dropped."""
    from runner.executors.base import TaskDone

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in executor.events(1.0):
            if isinstance(event, TaskDone) and event.task_id == task_id:
                return event.result
    raise AssertionError(f"no result for {task_id}")


WATCH_COLLECTIONS = """\
import gc

seen = []
watching = [False]


def collected(phase, info):
    if phase == "start" and watching[0]:
        seen.append(info["generation"])


gc.callbacks.append(collected)
"""
"""The start of a script run in a subprocess to count the collector's passes: `seen` gets the
generation of each collection made while `watching[0]` is true."""


def python_with_bytecode(script: str, *args: str, **env: str) -> str:
    """Run `python -c script *args` in a fresh interpreter that keeps bytecode as a user's would (no
    `PYTHONDONTWRITEBYTECODE` or `PYTHONPYCACHEPREFIX` inherited; `env` added, this repository on its
    path); return what it printed. It must succeed."""
    repo = str(Path(__file__).resolve().parent.parent)
    skipped = ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    environ = {k: v for k, v in os.environ.items() if k not in skipped}
    environ["PYTHONPATH"] = os.pathsep.join([repo, environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env={**environ, **env},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextmanager
def ready_executor(workers: int, *, quick: bool = False) -> Iterator[Any]:
    """A `LocalExecutor` with `workers` ready, closed after. `quick`: `flow run`'s (it polls), with the
    last tasks recorded quick and a core free for each worker, so tasks queue behind busy workers."""
    from runner.executors.local import QUICK_SAMPLES, LocalExecutor

    executor = LocalExecutor(workers, poll=quick)
    try:
        if quick:
            executor._cores = workers + 1
        executor.prestart(workers)
        for _ in range(QUICK_SAMPLES if quick else 0):
            executor._took(0.0001)  # the last tasks were quick
        deadline = time.monotonic() + 60
        while sum(1 for w in executor._workers if w.ready) < workers:
            assert time.monotonic() < deadline, "workers did not start"
            executor.events(0.1)
        yield executor
    finally:
        executor.close()


def task_results(executor: Any, ids: set[str], timeout: float = 60.0) -> dict[str, Any]:
    """Every result of `ids` (task id -> `TaskResult`), as an executor reports them; each once."""
    from runner.executors.base import TaskDone

    results: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while not ids <= results.keys():
        assert time.monotonic() < deadline, f"no result for {sorted(ids - results.keys())}"
        for event in executor.events(0.2):
            if isinstance(event, TaskDone):
                assert event.task_id not in results, f"{event.task_id} reported twice"
                results[event.task_id] = event.result
    return results


def ran(log: Path) -> list[str]:
    """The ids a test task appended to `log`, in order."""
    return log.read_text().split() if log.exists() else []
