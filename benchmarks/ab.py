"""One benchmark on two versions of the code, in alternation: `python -m benchmarks.ab REV NAME`.

Why: on these machines the same code measures 1.5-2x apart minutes apart (a `startup` of 0.206 s and
one of 0.291 s nine minutes later), so a figure taken after a change against one taken before it says
more about the machine than about the change. This runs `python -m benchmarks.NAME` on the git
revision `REV` (checked out in a temporary worktree) and on the working tree in turn, `--rounds`
times each (default 6), every run a fresh process; the two sides take turns going first, so a drift
of the machine during a round weighs on both alike. It prints every round's figures,
each side's median, their ratio and in how many rounds the working tree's figure was the lower.

The figure is the run's verdict figure (its last line, `NAME: <figure> <unit> (budget <b>) ...`),
or, with `--figure REGEX`, the first group of the first line of the run's output the pattern matches
(`--figure "FlowReloaded +p50 +([0-9.]+)"` takes `reload`'s reload latency). Arguments after `--`
go to every run (`-- --size 200`). The benchmark's environment (`FLOW_BENCH_SIZE`, ...) is passed on.

Each side runs its own code: the worktree's directory comes first on `PYTHONPATH` and is the working
directory of its runs, so its `dsl`, `runner` and `tui` are imported (and its workers started) there.

Last line: `ab NAME: <ratio> (working tree / REV, medians of N rounds; lower in K of N)`.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import machine, median

REPO = Path(__file__).resolve().parent.parent
VERDICT = re.compile(r"^\S+: ([0-9.]+) ")


def figure_of(output: str, pattern: re.Pattern[str] | None) -> float | None:
    """The verdict figure of a run's output, or the first group of the first line `pattern` matches."""
    lines = output.strip().splitlines()
    if pattern is None:
        found = VERDICT.match(lines[-1]) if lines else None
    else:
        found = next((m for m in map(pattern.search, lines) if m is not None), None)
    return float(found.group(1)) if found is not None else None


def run_once(root: Path, name: str, extra: list[str], pattern: re.Pattern[str] | None) -> float:
    """Run the benchmark on the code under `root` in a fresh process; its figure."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *extra],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    figure = figure_of(done.stdout, pattern)
    if figure is None:  # a FAIL verdict may come with exit status 1; a crash has no verdict line
        raise SystemExit(
            f"benchmarks.{name} on {root} exited {done.returncode} with no figure:\n"
            f"{done.stdout}{done.stderr}"
        )
    return figure


def worktree(revision: str, into: Path) -> Path:
    """A checkout of `revision` under `into` (detached; removed by `drop_worktree`), its modules
    compiled: a benchmark that times imports must not find one side's bytecode missing."""
    path = into / "base"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(path), revision],
        check=True,
        capture_output=True,
        text=True,
    )
    packages = [str(path / p) for p in ("dsl", "runner", "tui", "benchmarks") if (path / p).is_dir()]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *packages], capture_output=True)
    return path


def drop_worktree(path: Path) -> None:
    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], capture_output=True)


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.split("\n")[0])
    parser.add_argument("revision", help="the git revision to compare the working tree with (HEAD, main~3)")
    parser.add_argument("name", help="the benchmark: cold, cached, startup, whole, reload, dask, ...")
    parser.add_argument("--rounds", type=int, default=6, help="runs of each side (default 6)")
    parser.add_argument("--figure", help="a regular expression whose first group is the figure to compare")
    return parser.parse_args(argv), extra


def main(argv: list[str] | None = None) -> None:
    args, extra = parse(sys.argv[1:] if argv is None else argv)
    pattern = re.compile(args.figure) if args.figure else None
    rounds = max(1, args.rounds)
    print(f"benchmarks.{args.name}: working tree against {args.revision}, {rounds} rounds ({machine()})")
    with tempfile.TemporaryDirectory(prefix="flow-ab-") as directory:
        base = worktree(args.revision, Path(directory))
        try:
            mine: list[float] = []
            theirs: list[float] = []
            for index in range(rounds):
                sides = [(REPO, mine), (base, theirs)]
                for root, figures in sides if index % 2 else reversed(sides):
                    figures.append(run_once(root, args.name, extra, pattern))
                lower = "lower" if mine[-1] < theirs[-1] else "not lower"
                shown = f"{args.revision} {theirs[-1]:g}, working tree {mine[-1]:g}"
                print(f"  round {index + 1}: {shown} ({lower})")
        finally:
            drop_worktree(base)
    wins = sum(m < t for m, t in zip(mine, theirs, strict=True))
    print(f"  medians: {args.revision} {median(theirs):g}, working tree {median(mine):g}")
    ratio = median(mine) / median(theirs) if median(theirs) else float("nan")
    print(
        f"ab {args.name}: {ratio:.3f} (working tree / {args.revision}, medians of {rounds} rounds; "
        f"lower in {wins} of {rounds})"
    )


if __name__ == "__main__":
    main()
