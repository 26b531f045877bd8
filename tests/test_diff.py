"""`flow diff RUN_A RUN_B`: real runs of one flow with a code, a parameter and a metric change."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import CLIResult

FLOW = """
from dsl import log_metric, step

def scale(x):
    return x * 2

@step
def fetch(rows: int = 3):
    return list(range(rows))

@step
def train(fetch, lr: float = 0.1):
    log_metric("loss", round(1.0 - lr, 3))
    return [scale(x) for x in fetch]

@step
def evaluate(train):
    log_metric("accuracy", sum(train) / 10)
    return "ok"
"""


def test_diff_shows_params_metrics_code_and_outputs(
    write_flow: Callable[..., Path], flow_cli: Callable[..., CLIResult]
) -> None:
    path = write_flow(FLOW)
    assert flow_cli("run", str(path)).code == 0
    path.write_text(path.read_text().replace("x * 2", "x * 3"))
    assert flow_cli("run", str(path), "-p", "lr=0.5").code == 0
    data = flow_cli("diff", "1", "2", "--json").json()
    assert data["params"] == {"lr": {"change": "changed", "a": 0.1, "b": 0.5}}
    assert data["metrics"]["loss"] == {"a": 0.9, "b": 0.5, "delta": -0.4}
    assert data["metrics"]["accuracy"]["a"] == 0.6 and data["metrics"]["accuracy"]["b"] == 0.9
    steps = {s["step"]: s for s in data["steps"]}
    assert set(steps) == {"fetch", "train", "evaluate"}
    assert steps["fetch"]["status"] == ["succeeded", "cached"]
    assert steps["fetch"]["output"] == "equal" and not steps["fetch"]["fingerprint_changed"]
    train = steps["train"]
    assert train["fingerprint_changed"] and train["why"] == "helper changed: scale"
    assert train["output"] == "different" and train["preview"] == ["[0, 2, 4]", "[0, 3, 6]"]
    assert train["code"][0]["part"] == "scale"
    assert "-    return x * 2" in train["code"][0]["diff"]
    assert "+    return x * 3" in train["code"][0]["diff"]
    assert steps["evaluate"]["output"] == "equal"
    assert steps["evaluate"]["why"] == "upstream output changed: train"
    text = flow_cli("diff", "1", "last")
    assert text.code == 0, text
    lines = text.stdout.splitlines()
    assert "  ~ lr: 0.1 → 0.5" in lines
    assert "  loss: 0.9 → 0.5  (-0.4)" in lines
    assert "      +    return x * 3" in lines
    assert "  fetch: succeeded → cached; output equal" in lines
    again = flow_cli("run", str(path), "-p", "lr=0.5")
    assert again.code == 0
    same = flow_cli("diff", "2", "3").stdout.splitlines()
    assert "params: the same" in same and "  (1 other step the same)" in same
    path.write_text(
        path.read_text().replace("def fetch(rows: int = 3):", "def fetch(rows: int = 3, seed: int = 7):")
    )
    assert flow_cli("run", str(path), "-p", "lr=0.5").code == 0
    added = flow_cli("diff", "3", "4", "--json").json()
    assert added["params"] == {"seed": {"change": "added", "a": None, "b": 7}}
    assert {s["step"]: s["why"] for s in added["steps"]}["fetch"] == "code changed"
    assert "  - seed = 7" in flow_cli("diff", "4", "3").stdout.splitlines()


def test_diff_of_two_flows_or_an_unknown_run_is_refused(
    write_flow: Callable[..., Path], flow_cli: Callable[..., CLIResult]
) -> None:
    first = write_flow(FLOW)
    other = write_flow(FLOW, name="other.py")
    assert flow_cli("run", str(first)).code == 0
    assert flow_cli("run", str(other)).code == 0
    mixed = flow_cli("diff", "1", "2")
    assert mixed.code == 2
    assert "run #1 is of flow 'flow_file' and run #2 of flow 'other'" in mixed.stderr
    assert "Traceback" not in mixed.stderr and mixed.stdout == ""
    missing = flow_cli("diff", "1", "5")
    assert missing.code == 2 and "no run #5" in missing.stderr
