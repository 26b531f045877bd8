"""Smoke test of the core benchmarks: each module runs at a tiny size and ends with its verdict line.

Timings are not asserted (the machine may be busy); only that the benchmark runs end to end with the
real engine, worker processes, store and watcher, and that its last line has the promised format.
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
]


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("name", "unit", "budget", "env"),
    CASES,
    ids=[c[0] + ("-helper" if "FLOW_BENCH_HELPER_LINES" in c[3] else "") for c in CASES],
)
def test_benchmark_runs_and_ends_with_its_verdict(
    name: str, unit: str, budget: str, env: dict[str, str]
) -> None:
    full_env = {k: v for k, v in os.environ.items() if k not in ("FLOW_STORE", "FLOW_EXECUTOR")}
    full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}"],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    assert re.match(LAST_LINE.format(name=name, unit=re.escape(unit), budget=budget), lines[-1]), lines[-1]
    if "FLOW_BENCH_HELPER_LINES" in env:  # the steps ran through the helper module
        assert (
            "every step calling a" in lines[0] and "unchanged steps re-executed across all saves: 0" in lines
        )
