"""The normalised sources of a flow's functions kept for the next process (`runner.fingerprint.textcache`):
a fresh `flow run` of a file fingerprinted before parses none of its unchanged functions and gets the
very fingerprints a computation from scratch gives; an edit is worked out again however close in time
and size; a damaged, foreign or truncated file is ignored. Processes are real: a fresh interpreter
loads the flow and computes its static fingerprints, counting every `ast.parse`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from runner.fingerprint import textcache
from tests.helpers_core import python_with_bytecode

FLOW = '''
from dsl import step


def scale(x):
    return x * {factor}


@step
def a():
    """A docstring, not part of the fingerprint."""
    return 1  # a comment, neither


@step(retries=1)
def b(a):
    return scale(a)


@step
def c(b):
    total = 0
    for i in range(b):
        total += i
    return total
'''

PRINTER = """
import ast, json, sys

parses = []
parse = ast.parse
ast.parse = lambda *args, **kwargs: parses.append(1) or parse(*args, **kwargs)
from dsl import load_flow
from runner.fingerprint import static_prints

prints = static_prints(load_flow(sys.argv[1]))
print(json.dumps({
    "parses": len(parses),
    "prints": {name: [p.code, p.options, sorted(p.helpers.items()), sorted(p.texts.items())]
               for name, p in sorted(prints.items())},
}))
"""


def prints_in_a_fresh_process(path: Path, **env: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(python_with_bytecode(PRINTER, str(path), **env))
    return result


def from_scratch(path: Path, tmp_path: Path) -> dict[str, object]:
    """The fingerprints worked out with nothing kept (an empty cache directory, nothing written)."""
    empty = tmp_path / "nothing-kept"
    return prints_in_a_fresh_process(path, PYTHONPYCACHEPREFIX=str(empty), PYTHONDONTWRITEBYTECODE="1")


def write(path: Path, factor: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FLOW.format(factor=factor), encoding="utf-8")
    return path


def kept_file(path: Path) -> Path:
    found = textcache.texts_path(str(path))
    assert found is not None
    return Path(found)


def test_the_next_process_parses_no_function_and_gets_the_same_fingerprints(tmp_path: Path) -> None:
    path = write(tmp_path / "kept_flow.py", 2)
    first = prints_in_a_fresh_process(path)
    assert first["parses"] == 4  # a, b, c and the helper `scale`, each once
    assert kept_file(path).is_file() and kept_file(path).parent == path.parent / "__pycache__"
    second = prints_in_a_fresh_process(path)
    assert second == {"parses": 0, "prints": first["prints"]}
    assert from_scratch(path, tmp_path)["prints"] == first["prints"]


def test_an_edit_is_worked_out_again_even_with_the_same_size_and_modification_time(tmp_path: Path) -> None:
    path = write(tmp_path / "edited_flow.py", 2)
    before = prints_in_a_fresh_process(path)
    status = path.stat()
    write(path, 3)  # the same length
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert path.stat().st_size == status.st_size and path.stat().st_mtime_ns == status.st_mtime_ns
    after = prints_in_a_fresh_process(path)
    assert after["parses"] == 1  # the helper alone
    assert after["prints"] == from_scratch(path, tmp_path)["prints"]
    old, new = before["prints"], after["prints"]
    assert isinstance(old, dict) and isinstance(new, dict)
    assert old["b"][2] != new["b"][2]  # b's helper changed
    assert old["a"] == new["a"] and old["c"] == new["c"]
    assert b"x * 2" not in kept_file(path).read_bytes()  # what the last computation used, only
    assert prints_in_a_fresh_process(path) == {"parses": 0, "prints": new}


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated", "flipped", "foreign"])
def test_a_damaged_or_foreign_file_is_ignored_and_replaced(tmp_path: Path, damage: str) -> None:
    path = write(tmp_path / "damaged_flow.py", 2)
    first = prints_in_a_fresh_process(path)
    kept = kept_file(path)
    good = kept.read_bytes()
    damaged = {
        "empty": b"",
        "garbage": b"garbage",
        "truncated": good[: len(good) // 2],
        "flipped": good[:-40] + bytes([good[-40] ^ 1]) + good[-39:],  # in the body: its digest differs
        "foreign": b"\x00\x00\r\n" + good[4:],  # another interpreter's magic number
    }[damage]
    kept.write_bytes(damaged)
    assert prints_in_a_fresh_process(path) == first  # worked out again: every function parsed
    assert kept.read_bytes() == good


def test_the_kept_answers_must_come_from_this_very_normaliser(tmp_path: Path) -> None:
    """The header names the text of the code that works the answers out: another version's file (here,
    a digest one byte off) is ignored."""
    path = write(tmp_path / "version_flow.py", 2)
    first = prints_in_a_fresh_process(path)
    kept = kept_file(path)
    good = kept.read_bytes()
    at = len(good) - len(good.partition(b"flow texts 1\n")[2])  # the version digest follows the header
    kept.write_bytes(good[:at] + bytes([good[at] ^ 1]) + good[at + 1 :])
    assert prints_in_a_fresh_process(path) == first


def test_nothing_is_kept_when_bytecode_is_not_written(tmp_path: Path) -> None:
    path = write(tmp_path / "quiet_flow.py", 2)
    assert prints_in_a_fresh_process(path, PYTHONDONTWRITEBYTECODE="1")["parses"] == 4
    assert not kept_file(path).exists()


def test_a_pycache_prefix_is_followed(tmp_path: Path) -> None:
    path = write(tmp_path / "project" / "prefixed_flow.py", 2)
    prefix = tmp_path / "prefix"
    first = prints_in_a_fresh_process(path, PYTHONPYCACHEPREFIX=str(prefix))
    assert not (path.parent / "__pycache__").exists()
    assert [p.name for p in prefix.rglob("*.texts")] == [
        f"prefixed_flow.cpython-{sys.version_info[0]}{sys.version_info[1]}.texts"
    ]
    assert prints_in_a_fresh_process(path, PYTHONPYCACHEPREFIX=str(prefix)) == {
        "parses": 0,
        "prints": first["prints"],
    }


RELOADER = """
import sys
from pathlib import Path

from dsl import load_flow
from runner.fingerprint import static_prints

path = Path(sys.argv[1])
for _ in range(3):  # from the third load on, the parts are the last load's code objects
    static_prints(load_flow(path))
path.write_text(path.read_text().replace("total += i", "total += i * 2"))
static_prints(load_flow(path))
"""


def test_a_session_writes_the_texts_once_and_the_next_process_works_out_its_edits(tmp_path: Path) -> None:
    """A watch session's reloads leave the file as its first load wrote it (writing it at every save
    cost each reload its time); the next process works out what was edited since (one function) and
    takes the rest."""
    path = write(tmp_path / "watched_flow.py", 2)
    python_with_bytecode(RELOADER, str(path))
    kept = kept_file(path).read_bytes()
    assert b"total += i\n" in kept and b"total += i * 2" not in kept
    after = prints_in_a_fresh_process(path)
    assert after == {"parses": 1, "prints": from_scratch(path, tmp_path)["prints"]}
    assert prints_in_a_fresh_process(path)["parses"] == 0


def test_a_place_that_cannot_be_written_costs_nothing_but_the_time(tmp_path: Path) -> None:
    path = write(tmp_path / "blocked_flow.py", 2)
    (tmp_path / "__pycache__").write_text("a file where the directory would be", encoding="utf-8")
    first = prints_in_a_fresh_process(path)
    assert prints_in_a_fresh_process(path) == first  # parsed again: nothing could be kept
    assert first["parses"] == 4
