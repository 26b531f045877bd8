"""`flow run` of a 1-step flow, interpreter start to exit: `python -m benchmarks.startup`.

Issue 21's budget: 0.12 s (issue 2's was 0.5 s). Each sample is one `flow run FILE --store DIR`
subprocess (the installed console script, output piped so the plain reporter is used) with a fresh
store, timed from spawn to exit; the median of at least 5 samples is the figure (default 7). For context
it also times a bare interpreter (`python -c pass`), what a plain `flow run` imports before it loads the
flow (`python -c "import runner.cli.running"`: the engine, the store, the runner; no Typer, see
`runner.cli.run_args`) and what every other command imports (`python -c "import runner.cli.commands"`:
Typer and every command). `import runner.cli` alone imports next to nothing, so that `flow run` can
start its first worker before the rest.

`flow run` on a terminal (a pseudo-terminal, as info) starts the live view, which a pipe does not: what
a user at a terminal waits for.

Bytecode: a normal install compiles `.pyc` files and Python reuses them. Some environments set
`PYTHONDONTWRITEBYTECODE=1` with no `.pyc` for the project, so every start recompiles every project
module from source. The verdict is measured as a user's install runs: bytecode caching on, written to
a private `PYTHONPYCACHEPREFIX` (so the repository is not touched) by one untimed run first. When
the environment disables bytecode writing, the as-is figure is printed too.

Last line: `startup: <s> s (budget 0.12) PASS|FAIL`.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import conclude, machine, median, options, slow_library, tempdir, write_flow

BUDGET_S = 0.12

ONE_STEP = '''"""One trivial step."""

from dsl import step


@step
def hello():
    return "hello"
'''


def flow_command() -> list[str]:
    """The installed `flow` console script next to this interpreter, else `python -m runner`."""
    here = Path(sys.executable).parent / "flow"
    if here.exists():
        return [str(here)]
    found = shutil.which("flow")
    return [found] if found else [sys.executable, "-m", "runner"]


def clean_env(pycache: Path | None = None) -> dict[str, str]:
    """The environment without the user's flow settings; with `pycache`, bytecode caching on there."""
    env = dict(os.environ)
    for key in ("FLOW_STORE", "FLOW_EXECUTOR"):
        env.pop(key, None)
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    return timed_with_cpu(cmd, cwd, env)[0]


def timed_with_cpu(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and its children: the runner and its workers). The
    CPU figure is info: on a shared machine it moves less than the wall clock when others are busy."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def timed_on_terminal(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Wall seconds of `cmd` with its output on a 120x36 pseudo-terminal, read as it comes: what a user
    at a terminal waits for (the live view, `runner.output.live`, which a pipe does not start)."""
    import fcntl
    import pty
    import struct
    import termios

    main, side = pty.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 36, 120, 0, 0))
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=side, stderr=side)
    os.close(side)
    try:
        while os.read(main, 65536):
            pass
    except OSError:  # EIO: the command, the terminal's last holder, has closed it
        pass
    code = proc.wait()
    seconds = time.perf_counter() - t0
    os.close(main)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {code} on a terminal")
    return seconds


def series(root: Path, tag: str, env: dict[str, str], runs: int) -> dict[str, list[float]]:
    """Time the interpreter, the CLI import, and `flow run` with fresh stores (then cached, as info)."""
    command = flow_command()
    path = write_flow(root / "project", "one_step", ONE_STEP)
    first = root / f"store-{tag}-0"
    out: dict[str, list[float]] = {
        "python -c pass": [timed([sys.executable, "-c", "pass"], root, env) for _ in range(runs)],
        "python -c 'import runner.cli.running'": [
            timed([sys.executable, "-c", "import runner.cli.running"], root, env) for _ in range(runs)
        ],
        "python -c 'import runner.cli.commands'": [
            timed([sys.executable, "-c", "import runner.cli.commands"], root, env) for _ in range(runs)
        ],
    }
    fresh = [
        timed_with_cpu(
            [*command, "run", str(path), "--store", str(root / f"store-{tag}-{i}")], path.parent, env
        )
        for i in range(runs)
    ]
    out["flow run, fresh store"] = [wall for wall, _ in fresh]
    out["  its CPU, runner + worker (info)"] = [cpu for _, cpu in fresh]
    out["flow run on a terminal, fresh (info)"] = [
        timed_on_terminal(
            [*command, "run", str(path), "--store", str(root / f"store-{tag}-tty-{i}")], path.parent, env
        )
        for i in range(runs)
    ]
    out["flow run, cached (info)"] = [
        timed([*command, "run", str(path), "--store", str(first)], path.parent, env) for _ in range(runs)
    ]
    return out


SLOW_LIBRARY_S = 0.25
"""CPU seconds the info row's library takes to import (pandas with two scikit-learn modules: 1.4-3 s
on this kind of machine)."""

SLOW_LIBRARY_FLOW = '''"""One trivial step that uses a library that is slow to import."""

import flowbench_slowlib
from dsl import step


@step
def hello():
    return flowbench_slowlib.__name__
'''


WIDE_LIBRARY_FLOW = '''"""Two steps ready at once, then one after both, all using the slow library."""

import flowbench_slowlib
from dsl import step


@step
def left():
    return flowbench_slowlib.__name__


@step
def right():
    return flowbench_slowlib.__name__


@step
def both(left, right):
    return left + right
'''


def library_series(root: Path, env: dict[str, str], runs: int) -> dict[str, list[float]]:
    """Info: `flow run` of a 1-step flow whose file imports a library that takes `SLOW_LIBRARY_S` of CPU
    to import (an installed distribution: a RECORD lists it). The runner imports it to load the flow and
    the worker to run the step; the early worker imports it meanwhile (`runner.executors.preload`), so
    the run should cost about one import more than the 1-step flow, not two.

    And of a 3-step flow with two steps ready at once (`--workers 2`): the second worker imports the
    library before it takes a step, while the first runs them all, so that flow should cost about what
    the 1-step one does, not one import more (before, the second worker was handed a step at once, which
    waited for its import)."""
    libs = slow_library(root, "flowbench_slowlib", SLOW_LIBRARY_S)
    env = {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(libs), env.get("PYTHONPATH", "")) if p)}
    command = flow_command()
    path = write_flow(root / "library", "slow_library", SLOW_LIBRARY_FLOW)
    wide = write_flow(root / "wide", "wide_library", WIDE_LIBRARY_FLOW)
    return {
        "python -c 'import the library'": [
            timed([sys.executable, "-c", "import flowbench_slowlib"], root, env) for _ in range(runs)
        ],
        "flow run, fresh store": [
            timed([*command, "run", str(path), "--store", str(root / f"store-library-{i}")], path.parent, env)
            for i in range(runs)
        ],
        "flow run of 2 roots + 1, 2 workers": [
            timed(
                [*command, "run", str(wide), "--workers", "2", "--store", str(root / f"store-wide-{i}")],
                wide.parent,
                env,
            )
            for i in range(runs)
        ],
    }


def show(title: str, results: dict[str, list[float]]) -> None:
    print(title)
    for what, samples in results.items():
        print(
            f"  {what:<40} median {median(samples):.3f} s  "
            f"(min {min(samples):.3f}, max {max(samples):.3f}; all {' '.join(f'{s:.3f}' for s in samples)})"
        )


def main() -> None:
    opts = options(size=1, repeat=7)
    runs = max(opts.repeat, 1)
    print(f"`flow run` of a 1-step flow, start to exit, median of {runs} ({machine()})")
    print(f"command: {' '.join(flow_command())} run FILE --store DIR")
    with tempdir() as root:
        env = clean_env(root / "pycache")
        timed(
            [
                *flow_command(),
                "run",
                str(write_flow(root / "warm", "one_step", ONE_STEP)),
                "--store",
                str(root / "warm" / "store"),
            ],
            root,
            env,
        )  # writes the .pyc files; untimed
        normal = series(root, "normal", env, runs)
        show("bytecode cache on (a normal install):", normal)
        if os.environ.get("PYTHONDONTWRITEBYTECODE"):
            as_is = series(root, "as-is", clean_env(), runs)
            show(
                "this environment as is (PYTHONDONTWRITEBYTECODE set, project compiled on every start):",
                as_is,
            )
        slow = library_series(root, env, runs)
        show(f"(info) a flow importing a library that takes {SLOW_LIBRARY_S:g} s of CPU to import:", slow)
        extra = median(slow["flow run, fresh store"]) - median(normal["flow run, fresh store"])
        imports = median(slow["python -c 'import the library'"]) - median(normal["python -c pass"])
        ratio = extra / imports
        print(f"  the library adds {extra:.3f} s to the run: {ratio:.1f}x its import ({imports:.3f} s)")
        wider = median(slow["flow run of 2 roots + 1, 2 workers"]) - median(slow["flow run, fresh store"])
        print(f"  the 3-step flow adds {wider:.3f} s to the 1-step one: {wider / imports:.1f}x its import")
    figure = median(normal["flow run, fresh store"])
    conclude("startup", figure, "s", BUDGET_S, figure <= BUDGET_S)


if __name__ == "__main__":
    main()
