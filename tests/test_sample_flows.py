"""Every sample flow runs with the real CLI, finishes in under 10 s, and a second run is fully cached."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dsl import load_flow

SAMPLES = Path(__file__).resolve().parent.parent / "sample_flows"
FILES = sorted(p.name for p in [*SAMPLES.glob("*.py"), *SAMPLES.glob("*.yaml")] if not p.name.startswith("_"))


def test_there_are_sample_flows():
    assert {"hello.py", "ml_pipeline.py", "quality_gated.py", "sweep.py", "model_chain.py"} <= set(FILES)
    assert {"yaml_pipeline.yaml", "mixed_steps.py"} <= set(FILES)


@pytest.mark.parametrize("name", FILES)
def test_each_sample_flow_runs_then_is_fully_cached(flow_cli, name):
    path = SAMPLES / name
    started = time.monotonic()
    first = flow_cli("run", str(path), timeout=60)
    elapsed = time.monotonic() - started
    assert first.code == 0, first
    assert elapsed < 10, f"{name} took {elapsed:.1f}s"
    assert "Traceback" not in first.stderr
    run = flow_cli("show", "last", "--json").json()
    assert run["status"] == "succeeded"
    assert all(s["status"] in ("succeeded", "skipped") for s in run["steps"]), run["steps"]
    second = flow_cli("run", str(path), "--json", timeout=60)
    assert second.code == 0, second
    uncached = {name for name, node in load_flow(path).graph.nodes.items() if not node.step.cache}
    finished = [e for e in second.events() if e["event"] == "step_finished" and e["step"] not in uncached]
    ran = [e["step"] for e in finished if e["status"] == "succeeded"]
    assert ran == [], f"re-executed on an unchanged second run: {ran}"
    assert not [e for e in second.events() if e["event"] == "step_started" and e["step"] not in uncached]
    check = flow_cli("check", str(path))
    assert check.code == 0, check


def statuses(flow_cli) -> dict[str, str]:
    return {s["name"]: s["status"] for s in flow_cli("show", "last", "--json").json()["steps"]}


def test_quality_gated_takes_the_good_path_by_default(flow_cli):
    result = flow_cli("run", str(SAMPLES / "quality_gated.py"))
    assert result.code == 0, result
    st = statuses(flow_cli)
    assert st["train"] == "succeeded"
    assert st["check_model_quality"] == "succeeded"
    assert st["release"] == "succeeded"
    assert st["notify_data_team"] == "skipped"
    metrics = flow_cli("show", "last", "--json").json()["metrics"]
    assert metrics["accuracy"] >= 0.8


def test_quality_gated_notifies_the_data_team_on_bad_data(flow_cli):
    result = flow_cli("run", str(SAMPLES / "quality_gated.py"), "-p", "noise=0.5")
    assert result.code == 0, result
    st = statuses(flow_cli)
    assert st["train"] == "skipped"
    assert st["release"] == "skipped"
    assert st["notify_data_team"] == "succeeded"
    assert "data rejected" in result.stdout
    assert "data-team" in flow_cli("logs", "last", "notify_data_team").stdout


def test_quality_gated_notifies_on_a_bad_model(flow_cli):
    result = flow_cli("run", str(SAMPLES / "quality_gated.py"), "-p", "min_accuracy=0.99")
    assert result.code == 0, result
    st = statuses(flow_cli)
    assert st["train"] == "succeeded" and st["release"] == "skipped"
    assert st["notify_data_team"] == "succeeded"


def test_ml_pipeline_records_metrics_and_reruns_training_on_a_param_change(flow_cli):
    path = str(SAMPLES / "ml_pipeline.py")
    assert flow_cli("run", path).code == 0
    run = flow_cli("show", "last", "--json").json()
    assert 0.5 < run["metrics"]["accuracy"] <= 1.0
    result = flow_cli("run", path, "-p", "lr=0.1")
    assert result.code == 0, result
    st = {s["name"]: s for s in flow_cli("show", "last", "--json").json()["steps"]}
    assert st["collect_data"]["status"] == "cached" and st["split_data"]["status"] == "cached"
    assert st["train"]["status"] == "succeeded" and st["train"]["reason"] == "parameter changed: lr"


def test_sweep_fans_out_and_picks_the_best(flow_cli):
    assert flow_cli("run", str(SAMPLES / "sweep.py")).code == 0
    run = flow_cli("show", "last", "--json").json()
    instances = [s for s in run["steps"] if s.get("parent")]
    assert len(instances) >= 2
    assert all(s["status"] == "succeeded" for s in instances)


def test_hello_with_a_parameter(flow_cli):
    result = flow_cli("run", str(SAMPLES / "hello.py"), "-p", "name=flow")
    assert result.code == 0, result
    assert "HELLO, FLOW!" in result.stdout
