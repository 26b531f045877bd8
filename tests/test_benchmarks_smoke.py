"""Smoke test of the core benchmarks: each module runs at a tiny size, says the machine's load and ends
with its verdict line.

Timings are not asserted (the machine may be busy): a budget that failed is an exit status 1 beside
a FAIL verdict, which passes here. What is asserted: the benchmark runs end to end with the real
engine, worker processes, store, watcher, TUI and Dask cluster, and its output has the promised parts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAST_LINE = r"^{name}: \d+(\.\d+)? {unit} \(budget {budget}\) (PASS|FAIL)$"

CASES = [
    ("cold", "ms/step", r"0\.15", {"FLOW_BENCH_SIZE": "5", "FLOW_BENCH_REPEAT": "1"}),
    ("cached", "ms/step", r"0\.02", {"FLOW_BENCH_SIZE": "5", "FLOW_BENCH_REPEAT": "1"}),
    ("startup", "s", r"0\.12", {"FLOW_BENCH_REPEAT": "1"}),
    ("whole", "s", r"0\.15", {"FLOW_BENCH_SIZE": "5", "FLOW_BENCH_REPEAT": "1"}),
    ("reload", "ms", "20", {"FLOW_BENCH_SIZE": "8", "FLOW_BENCH_SAVES": "3"}),
    (
        "reload",
        "ms",
        "20",
        {"FLOW_BENCH_SIZE": "8", "FLOW_BENCH_SAVES": "3", "FLOW_BENCH_HELPER_LINES": "40"},
    ),
    ("scale", "ms/step", r"0\.2", {"FLOW_BENCH_SIZE": "5", "FLOW_BENCH_REPEAT": "1"}),
    ("interrupt", "ms", "50", {"FLOW_BENCH_SAVES": "2"}),
    ("large", "ms", r"2\.0", {"FLOW_BENCH_SIZE": "2", "FLOW_BENCH_SAVES": "2"}),
    ("dask", "ms/step", r"3\.0", {"FLOW_BENCH_SIZE": "5"}),
    ("tui", "ms", "150", {}),
]


def _run_module(module: str, *args: str, env: dict[str, str], timeout: float) -> list[str]:
    """Run `python -m module args` from the repository with `env` added to this environment (less the
    user's flow settings); assert it printed something and exited 0, or 1 after a FAIL verdict; its
    output's lines."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("FLOW_STORE", "FLOW_EXECUTOR")}
    full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    failed = lines[-1].endswith(" FAIL")
    assert proc.returncode == (1 if failed else 0), proc.stdout + proc.stderr
    return lines


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("name", "unit", "budget", "env"),
    CASES,
    ids=[c[0] + ("-helper" if "FLOW_BENCH_HELPER_LINES" in c[3] else "") for c in CASES],
)
def test_benchmark_runs_and_ends_with_its_verdict(
    name: str, unit: str, budget: str, env: dict[str, str]
) -> None:
    if name == "dask":
        pytest.importorskip("distributed")
    lines = _run_module(f"benchmarks.{name}", env=env, timeout=170)
    assert any("load average" in line for line in lines[:-1]), lines  # issue 21: figures beside the load
    assert re.match(LAST_LINE.format(name=name, unit=re.escape(unit), budget=budget), lines[-1]), lines[-1]
    if "FLOW_BENCH_HELPER_LINES" in env:  # the steps ran through the helper module
        assert (
            "every step calling a" in lines[0] and "unchanged steps re-executed across all saves: 0" in lines
        )


def _worktrees() -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.timeout(240)
@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs a git checkout (the base side is a worktree)")
def test_ab_runs_a_benchmark_on_a_revision_and_the_working_tree_in_turn() -> None:
    """`benchmarks.ab` checks HEAD out in a temporary worktree, runs `benchmarks.cold` there and on the
    working tree in turn, ends with the ratio of the medians, and leaves no worktree behind."""
    before = _worktrees()
    env = {"FLOW_BENCH_SIZE": "5", "FLOW_BENCH_REPEAT": "1"}
    lines = _run_module("benchmarks.ab", "HEAD", "cold", "--rounds", "2", env=env, timeout=230)
    assert [line.split(":")[0] for line in lines if line.startswith("  round")] == ["  round 1", "  round 2"]
    assert re.match(
        r"^ab cold: \d+\.\d{3} \(working tree / HEAD, medians of 2 rounds; lower in [0-2] of 2\)$", lines[-1]
    ), lines[-1]
    assert _worktrees() == before


def test_ab_takes_the_verdict_figure_or_the_one_asked_for() -> None:
    from benchmarks.ab import figure_of

    output = (
        "replace -> FlowReloaded        p50    13.4 ms   p95    17.2 ms\nreload: 17.5 ms (budget 20) PASS\n"
    )
    assert figure_of(output, None) == 17.5
    assert figure_of(output, re.compile(r"FlowReloaded +p50 +([0-9.]+)")) == 13.4
    assert figure_of("Traceback (most recent call last):\n", None) is None
    assert figure_of(output, re.compile(r"no such line ([0-9]+)")) is None


def test_a_benchmark_ends_with_its_verdict_and_a_failed_budget_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from benchmarks.common import conclude

    conclude("cold", 0.1234, "ms/step", 0.15, True)
    assert capsys.readouterr().out == "cold: 0.123 ms/step (budget 0.15) PASS\n"
    with pytest.raises(SystemExit) as exited:
        conclude("tui", 151.4, "ms", 150, False, digits=0)
    assert exited.value.code == 1
    assert capsys.readouterr().out == "tui: 151 ms (budget 150) FAIL\n"
