"""A flow file's compiled code kept for the next process (`dsl.codecache`): taken only for exactly the
text it was compiled from, never stale however close in time two edits are, and harmless when the
file is damaged, foreign or cannot be written. Processes are real: a fresh interpreter loads the flow
with an audit hook that records every `compile` of the flow file."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from dsl import codecache, load_flow
from tests.helpers_core import python_with_bytecode

FLOW = """
from dsl import step


@step
def a():
    return {value}


@step
def b(a):
    return a + 1
"""

LOADER = """
import json, sys

path = sys.argv[1]
compiled = []
sys.addaudithook(lambda event, args: compiled.append(1) if event == "compile" and args[1] == path else None)
from dsl import load_flow

loaded = load_flow(path)
print(json.dumps({"compiled": len(compiled), "a": loaded.graph.nodes["a"].step.fn()}))
"""


def load_in_a_fresh_process(path: Path, **env: str) -> dict[str, int]:
    result: dict[str, int] = json.loads(python_with_bytecode(LOADER, str(path), **env))
    return result


def write(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FLOW.format(value=value), encoding="utf-8")
    return path


def kept_file(path: Path) -> Path:
    found = codecache.code_path(str(path))
    assert found is not None
    return Path(found)


def test_the_next_process_takes_the_kept_code_and_compiles_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "kept_flow.py", 1)
    assert load_in_a_fresh_process(path) == {"compiled": 1, "a": 1}
    assert kept_file(path).is_file() and kept_file(path).parent == path.parent / "__pycache__"
    assert load_in_a_fresh_process(path) == {"compiled": 0, "a": 1}


def test_an_edit_is_compiled_again_even_with_the_same_size_and_modification_time(tmp_path: Path) -> None:
    path = write(tmp_path / "edited_flow.py", 1)
    assert load_in_a_fresh_process(path) == {"compiled": 1, "a": 1}
    before = path.stat()
    write(path, 2)  # the same length
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    assert load_in_a_fresh_process(path) == {"compiled": 1, "a": 2}
    assert load_in_a_fresh_process(path) == {"compiled": 0, "a": 2}


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"garbage",
        b"\x00\x00\r\n" + b"flow file code 1\n" + bytes(32),  # another interpreter's magic number
        "truncated",
        "another text's",
    ],
    ids=["empty", "garbage", "foreign", "truncated", "another-text"],
)
def test_a_damaged_or_foreign_file_is_ignored_and_replaced(tmp_path: Path, damage: bytes | str) -> None:
    path = write(tmp_path / "damaged_flow.py", 1)
    assert load_in_a_fresh_process(path) == {"compiled": 1, "a": 1}
    kept = kept_file(path)
    good = kept.read_bytes()
    if damage == "truncated":
        kept.write_bytes(good[: len(good) // 2])
    elif damage == "another text's":
        other = write(tmp_path / "other" / "damaged_flow.py", 3)
        load_in_a_fresh_process(other)
        kept.write_bytes(kept_file(other).read_bytes())
    else:
        assert isinstance(damage, bytes)
        kept.write_bytes(damage)
    assert load_in_a_fresh_process(path) == {"compiled": 1, "a": 1}
    assert kept.read_bytes() == good


def test_nothing_is_kept_when_bytecode_is_not_written(tmp_path: Path) -> None:
    path = write(tmp_path / "quiet_flow.py", 1)
    assert load_in_a_fresh_process(path, PYTHONDONTWRITEBYTECODE="1") == {"compiled": 1, "a": 1}
    assert not (tmp_path / "__pycache__").exists()


def test_a_pycache_prefix_is_followed(tmp_path: Path) -> None:
    path = write(tmp_path / "project" / "prefixed_flow.py", 1)
    prefix = tmp_path / "prefix"
    assert load_in_a_fresh_process(path, PYTHONPYCACHEPREFIX=str(prefix)) == {"compiled": 1, "a": 1}
    assert not (path.parent / "__pycache__").exists()
    assert [p.name for p in prefix.rglob("*.flow")] == [
        f"prefixed_flow.cpython-{sys.version_info[0]}{sys.version_info[1]}.flow"
    ]
    assert load_in_a_fresh_process(path, PYTHONPYCACHEPREFIX=str(prefix)) == {"compiled": 0, "a": 1}


def test_a_place_that_cannot_be_written_costs_nothing_but_the_time(tmp_path: Path) -> None:
    path = write(tmp_path / "blocked_flow.py", 1)
    (tmp_path / "__pycache__").write_text("a file where the directory would be", encoding="utf-8")
    assert load_in_a_fresh_process(path) == {"compiled": 1, "a": 1}
    assert load_in_a_fresh_process(path) == {"compiled": 1, "a": 1}


def test_the_kept_code_is_the_code_compile_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    path = write(tmp_path / "same_flow.py", 5)
    source = path.read_text(encoding="utf-8")
    compiled = compile(source, str(path), "exec", dont_inherit=True)
    codecache.keep_code(source, str(path), compiled)
    assert codecache.cached_code(source, str(path)) == (compiled,)
    assert codecache.cached_code(source + "\n", str(path)) is None
    assert codecache.cached_code(source, str(tmp_path / "elsewhere.py")) is None
    assert load_flow(path).graph.nodes["a"].step.fn() == 5


def test_a_file_compiled_in_halves_is_kept_in_halves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large file's first compile (`dsl.splitcompile`) gives two codes; the next process takes both
    and compiles nothing. A damaged pair is ignored."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    path = write(tmp_path / "halves_flow.py", 3)
    source = path.read_text(encoding="utf-8")
    cut = source.index("@step\ndef b")
    halves = (compile(source[:cut], str(path), "exec"), compile(source[cut:], str(path), "exec"))
    codecache.keep_code(source, str(path), halves)
    assert codecache.cached_code(source, str(path)) == halves
    assert load_in_a_fresh_process(path) == {"compiled": 0, "a": 3}
    codecache.keep_code(source, str(path), (halves[0], "not code"))  # type: ignore[arg-type]
    assert codecache.cached_code(source, str(path)) is None


# ----- the user's modules a flow imports (`codecache.module_code`) ---------------------------------

USING_HELPER = """
from dsl import step

import helper


@step
def a():
    return helper.value()
"""

HELPER = """
import builtins

builtins.HELPER_RUNS = getattr(builtins, "HELPER_RUNS", 0) + 1  # executed at every import


def value():
    return {value}
"""

LOADS = """
import json, os, sys, builtins

flow, helper, edits = sys.argv[1], sys.argv[2], sys.argv[3:]
compiled = []
sys.addaudithook(lambda event, args: compiled.append(1) if event == "compile" and args[1] == helper else None)
from dsl import load_flow

seen = []
for edit in [None, *edits]:
    if edit is not None:  # the same length, the same modification time: only the text differs
        before = os.stat(helper)
        with open(helper, "w", encoding="utf-8") as handle:
            handle.write(edit)
        os.utime(helper, ns=(before.st_atime_ns, before.st_mtime_ns))
    compiled.clear()
    value = load_flow(flow).graph.nodes["a"].step.fn()
    seen.append({"compiled": len(compiled), "a": value, "runs": builtins.HELPER_RUNS})
print(json.dumps(seen))
"""


def loads_in_a_fresh_process(flow: Path, helper: Path, *edits: str, **env: str) -> list[dict[str, int]]:
    """Load `flow` in a new interpreter, then again after each edit of `helper`: per load, how many
    times `helper` was compiled, what step `a` returns and how many times `helper` ran so far."""
    result: list[dict[str, int]] = json.loads(
        python_with_bytecode(LOADS, str(flow), str(helper), *edits, **env)
    )
    return result


def project_with_helper(root: Path, value: int) -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    flow = root / "helped_flow.py"
    flow.write_text(USING_HELPER, encoding="utf-8")
    helper = root / "helper.py"
    helper.write_text(HELPER.format(value=value), encoding="utf-8")
    return flow, helper


def test_a_local_module_is_compiled_once_per_text_and_run_at_every_load(tmp_path: Path) -> None:
    """Every load imports the module again (it runs each time) but compiles it only when its text
    changed, however close in time, with the same size and modification time; the next process
    takes the code the last load kept on disk."""
    flow, helper = project_with_helper(tmp_path / "project", 1)
    edits = (HELPER.format(value=2), HELPER.format(value=2), HELPER.format(value=1))
    assert loads_in_a_fresh_process(flow, helper, *edits) == [
        {"compiled": 1, "a": 1, "runs": 1},
        {"compiled": 1, "a": 2, "runs": 2},  # edited: compiled again
        {"compiled": 0, "a": 2, "runs": 3},  # the same text: its code again, the module run again
        {"compiled": 1, "a": 1, "runs": 4},  # the first text again: only the latest text is kept
    ]
    assert kept_file(helper).is_file() and kept_file(helper).parent == helper.parent / "__pycache__"
    assert loads_in_a_fresh_process(flow, helper) == [{"compiled": 0, "a": 1, "runs": 1}]


def test_a_local_module_is_kept_on_disk_only_where_bytecode_is_written(tmp_path: Path) -> None:
    flow, helper = project_with_helper(tmp_path / "project", 1)
    quiet = loads_in_a_fresh_process(flow, helper, HELPER.format(value=1), PYTHONDONTWRITEBYTECODE="1")
    assert quiet == [{"compiled": 1, "a": 1, "runs": 1}, {"compiled": 0, "a": 1, "runs": 2}]
    assert not (helper.parent / "__pycache__").exists()
    kept_file(helper).parent.mkdir()
    kept_file(helper).write_bytes(b"damaged")
    assert loads_in_a_fresh_process(flow, helper) == [{"compiled": 1, "a": 1, "runs": 1}]
    assert loads_in_a_fresh_process(flow, helper) == [{"compiled": 0, "a": 1, "runs": 1}]


def test_module_code_is_the_code_compile_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    source = HELPER.format(value=7)
    filename = str(tmp_path / "helper.py")
    code = codecache.module_code(source, filename)
    assert code == compile(source, filename, "exec", dont_inherit=True)
    assert codecache.module_code(source, filename) is code
    assert codecache.module_code(source, str(tmp_path / "other.py")) is not code
    assert codecache.module_code(source + "\n", filename) is not code
