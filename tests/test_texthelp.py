"""A large flow's function texts worked out on two cores (`runner.fingerprint.texthelp`): the helper
interpreter's share gives the very fingerprints this process works out alone, is kept for the next
process like the rest, is never asked for what is known already, and anything unusual (one core, a
helper that cannot start, fails, answers garbage or runs other code) leaves the work to this process.
Processes are real: a fresh interpreter loads the flow and computes its static fingerprints with the
threshold lowered, counting its own `ast.parse` calls (the helper's are in the helper)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers_core import python_with_bytecode

STEPS = 40

TEMPLATES = (
    '''@step
def s{i}({up}):
    """Step {i}: a docstring, not part of the fingerprint."""
    return {arg} + {i}  # a comment, neither
''',
    """@step(version="2")
def s{i}({up}):
    text = 'it\\'s é'
    pattern = "\\d+"  # an invalid escape: a warning where it is compiled, not an error
    return len(text) + len(pattern) + scale({arg})
""",
    """@step
def s{i}({up}):
    import json

    return json.loads(
        json.dumps({arg})
    )
""",
    """@step
def s{i}({up}):
    def inner(x):
        return x * 2

    return inner({arg})
""",
    '''@step
def s{i}({up}):
    """Only a docstring."""
''',
)


def flow_text(steps: int = STEPS) -> str:
    parts = ["from dsl import step\n\n\ndef scale(x):\n    return x * 3\n"]
    for i in range(steps):
        up = f"s{i - 1}" if i else ""
        arg = f"(s{i - 1} or 0)" if i else "1"
        parts.append(TEMPLATES[i % len(TEMPLATES)].format(i=i, up=up, arg=arg))
    return "\n\n".join(parts)


PRINTER = """
import ast, json, sys

parses = []
parse = ast.parse
ast.parse = lambda *args, **kwargs: parses.append(1) or parse(*args, **kwargs)
from dsl import load_flow
from runner.fingerprint import prints, texthelp

texthelp.THRESHOLD = int(sys.argv[2])
texthelp.HEAD_START = 0
exec(sys.argv[3])
helped = []
work_ahead = prints.work_ahead
prints.work_ahead = lambda *args: helped.append(work_ahead(*args)) or helped[-1]
loaded = load_flow(sys.argv[1])
found = prints.static_prints(loaded)
result = {
    "parses": len(parses),
    "helped": helped,
    "prints": {name: [p.code, p.options, sorted(p.helpers.items()), sorted(p.texts.items()), p.untrusted]
               for name, p in sorted(found.items())},
}
prints._BY_CODE.clear()  # as a load of new code would: every function is asked for again
prints.static_prints(loaded)
result["again"] = helped[-1]
print(json.dumps(result))
"""

NEVER = str(10**9)


def prints_of(path: Path, threshold: str, sabotage: str = "", kept: Path | None = None) -> dict[str, object]:
    """The fingerprints of `path` worked out in a fresh process (nothing kept beside the flow unless
    `kept` is a directory to keep it in)."""
    if kept is None:
        env = {"PYTHONPYCACHEPREFIX": str(path.parent / "nothing-kept"), "PYTHONDONTWRITEBYTECODE": "1"}
    else:
        env = {"PYTHONPYCACHEPREFIX": str(kept)}
    found: dict[str, object] = json.loads(
        python_with_bytecode(PRINTER, str(path), threshold, sabotage, **env)
    )
    return found


@pytest.fixture
def flow_path(tmp_path: Path) -> Path:
    path = tmp_path / "many_steps.py"
    path.write_text(flow_text(), encoding="utf-8")
    return path


def test_the_helpers_share_gives_the_fingerprints_this_process_works_out_alone(flow_path: Path) -> None:
    alone = prints_of(flow_path, NEVER)
    helped = prints_of(flow_path, "10")
    assert alone["helped"] == [0, 0]
    assert helped["helped"] == [STEPS // 2, 0]  # the last half, then nothing: all of it is known
    assert helped["again"] == 0 and alone["again"] == 0
    assert helped["prints"] == alone["prints"]
    # Each span the helper worked out is one parse this process did not make.
    assert isinstance(alone["parses"], int) and helped["parses"] == alone["parses"] - STEPS // 2
    steps = alone["prints"]
    assert (
        isinstance(steps, dict) and len(steps) == STEPS and all(p[0] and p[4] is None for p in steps.values())
    )
    texts = [text for p in steps.values() for _, text in p[3]]
    assert not any("docstring" in text or "comment" in text for text in texts)


def test_what_the_helper_worked_out_is_kept_for_the_next_process(flow_path: Path, tmp_path: Path) -> None:
    first = prints_of(flow_path, "10", kept=tmp_path / "helped")
    assert first["helped"] == [STEPS // 2, 0]
    second = prints_of(flow_path, "10", kept=tmp_path / "helped")
    assert second["helped"] == [0, 0]  # every span known from the kept file: no helper started
    assert second["prints"] == first["prints"] == prints_of(flow_path, NEVER)["prints"]
    # As many parses as after a first process that had no helper: only the docstring-only functions'
    # (their spans do not parse alone; the file is parsed for them, and that is not kept).
    prints_of(flow_path, NEVER, kept=tmp_path / "alone")
    assert second["parses"] == prints_of(flow_path, NEVER, kept=tmp_path / "alone")["parses"]


@pytest.mark.parametrize(
    "sabotage",
    [
        "texthelp.usable_cores = lambda: 1",
        "sys.executable = '/nowhere/python'",
        "texthelp._CHILD = 'import sys; sys.exit(1)'",
        "texthelp._CHILD = 'import sys; sys.stdout.write(\"not marshal\")'",
        "texthelp._CHILD = 'import marshal, sys; sys.stdout.buffer.write(marshal.dumps(None))'",
        "texthelp.version = lambda: bytes(32)",  # not the digest of the helper's code: it answers nothing
    ],
    ids=["one-core", "no-interpreter", "fails", "garbage", "wrong-shape", "other-code"],
)
def test_anything_unusual_leaves_the_work_to_this_process(flow_path: Path, sabotage: str) -> None:
    alone = prints_of(flow_path, NEVER)
    sabotaged = prints_of(flow_path, "10", sabotage)
    assert sabotaged["helped"] == [0, 0]
    assert sabotaged["prints"] == alone["prints"]
    assert sabotaged["parses"] == alone["parses"]


def test_a_small_flow_gets_no_helper(flow_path: Path) -> None:
    assert prints_of(flow_path, str(STEPS + 1))["helped"] == [0, 0]
