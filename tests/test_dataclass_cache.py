"""The compiled methods of dataclasses, cached across processes (`runner.dataclass_cache`): the same
code as `dataclasses` compiles, written once, read by the next process, never trusted when damaged."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from runner import dataclass_cache

CLASSES = """
from __future__ import annotations

import dataclasses
from dataclasses import InitVar, dataclass, field
from typing import ClassVar


@dataclass(frozen=True)
class Event:
    name: str
    at: float = 0.0
    tags: tuple[str, ...] = ()


@dataclass(order=True, slots=True)
class Row:
    id: int
    values: list[int] = field(default_factory=list)
    limit: ClassVar[int] = 3


@dataclass(kw_only=True, eq=False)
class Options:
    seed: InitVar[int] = 0
    rate: float = 0.5

    def __post_init__(self, seed: int) -> None:
        self.rate += seed
"""

METHODS = ("__init__", "__repr__", "__eq__", "__hash__", "__setattr__", "__delattr__", "__lt__", "__ge__")


def _define(namespace_name: str) -> dict[str, type]:
    module = types.ModuleType(namespace_name)
    sys.modules[namespace_name] = module  # dataclasses reads the module's globals
    try:
        exec(compile(CLASSES, f"<{namespace_name}>", "exec"), module.__dict__)
    finally:
        del sys.modules[namespace_name]
    return {name: module.__dict__[name] for name in ("Event", "Row", "Options")}


def _codes(cls: type) -> dict[str, types.CodeType]:
    return {m: vars(cls)[m].__code__ for m in METHODS if isinstance(vars(cls).get(m), types.FunctionType)}


@pytest.fixture
def fresh_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The cache installed on an empty file of its own."""
    path = tmp_path / "codes.dataclasses"
    monkeypatch.setattr(dataclass_cache, "cache_path", lambda: str(path))
    monkeypatch.setattr(dataclass_cache, "_codes", None)
    monkeypatch.setattr(dataclass_cache, "compiled", 0)
    monkeypatch.setattr(dataclasses, "exec", dataclass_cache._exec, raising=False)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    return path


def test_the_methods_are_the_code_dataclasses_compiles(fresh_cache: Path, monkeypatch: pytest.MonkeyPatch):
    cached = _define("cached_classes")  # compiled by the cache (it is empty)
    again = _define("cached_again")  # every text now comes from the cache
    assert dataclass_cache.compiled > 0
    monkeypatch.delattr(dataclasses, "exec")
    plain = _define("plain_classes")  # the builtin exec, as without the cache
    for name, cls in plain.items():
        expected = _codes(cls)
        assert expected, name
        for other in (cached[name], again[name]):
            found = _codes(other)
            assert found == expected, name  # code equality covers instructions, constants, flags, lines
            assert {m: c.co_flags for m, c in found.items()} == {m: c.co_flags for m, c in expected.items()}
            files = {m: c.co_filename for m, c in found.items()}
            assert files == {m: c.co_filename for m, c in expected.items()}
    event = cached["Event"]("a", 1.5)
    assert repr(event) == "Event(name='a', at=1.5, tags=())"
    assert hash(event) == hash(cached["Event"]("a", 1.5))
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.name = "b"  # type: ignore[misc]
    assert cached["Row"](1) < cached["Row"](2)
    assert cached["Options"](seed=2).rate == 2.5
    assert cached["Row"].__init__.__annotations__ == plain["Row"].__init__.__annotations__


def test_a_saved_cache_is_read_back_whole(fresh_cache: Path, monkeypatch: pytest.MonkeyPatch):
    _define("first_process")
    dataclass_cache.save()
    assert fresh_cache.is_file() and dataclass_cache.compiled == 0
    monkeypatch.setattr(dataclass_cache, "_codes", None)  # as a new process starts
    _define("second_process")
    assert dataclass_cache.compiled == 0
    stat = fresh_cache.stat()
    dataclass_cache.save()  # nothing new: the file is not written again
    assert fresh_cache.stat().st_mtime_ns == stat.st_mtime_ns


@pytest.mark.parametrize(
    "content",
    [b"", b"not a cache", dataclass_cache._HEADER + b"\x00garbage", dataclass_cache._HEADER + b"[]"],
    ids=["empty", "garbage", "corrupt", "not-a-dict"],
)
def test_a_damaged_cache_is_ignored_and_replaced(fresh_cache: Path, content: bytes):
    fresh_cache.write_bytes(content)
    classes = _define("after_damage")
    assert classes["Row"](1) == classes["Row"](1)
    assert dataclass_cache.compiled > 0  # compiled, nothing taken from the damaged file
    dataclass_cache.save()
    assert dataclass_cache._read(str(fresh_cache)).keys() == dataclass_cache._codes.keys()


def test_another_interpreters_cache_is_ignored(fresh_cache: Path):
    _define("this_python")
    dataclass_cache.save()
    data = fresh_cache.read_bytes()
    fresh_cache.write_bytes(b"\x00\x00" + data[2:])  # another bytecode magic number
    assert dataclass_cache._read(str(fresh_cache)) == {}


def test_nothing_is_written_when_bytecode_writing_is_off(fresh_cache: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    _define("no_bytecode")
    dataclass_cache.save()
    assert not fresh_cache.exists()


def test_a_cache_that_cannot_be_written_costs_nothing_but_time(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(dataclass_cache, "cache_path", lambda: str(blocker / "codes.dataclasses"))
    _define("unwritable")
    dataclass_cache.save()  # its directory is a file: no error, nothing written, no temporary left
    assert blocker.read_text() == ""
    assert list(tmp_path.iterdir()) == [blocker]


def _flow_env(pycache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def test_flow_run_writes_the_cache_once_and_the_next_run_uses_it(write_flow, tmp_path: Path):
    """A real `flow run`: the first writes the cache beside flow's bytecode; the second finds every
    text there (it would write the file again if it had compiled one)."""
    path = write_flow("from dsl import step\n\n@step\ndef s():\n    return 1\n")
    pycache = tmp_path / "pycache"
    env = _flow_env(pycache)
    command = [sys.executable, "-m", "runner", "run", str(path)]
    first = subprocess.run(
        [*command, "--store", str(tmp_path / "a")], env=env, capture_output=True, timeout=120
    )
    assert first.returncode == 0, first.stderr
    found = list(pycache.rglob("dataclass_cache.*.dataclasses"))
    assert len(found) == 1
    codes = dataclass_cache._read(str(found[0]))
    assert len(codes) > 100  # the events, records, the engine's model...
    written = found[0].stat().st_mtime_ns
    second = subprocess.run(
        [*command, "--store", str(tmp_path / "b")], env=env, capture_output=True, timeout=120
    )
    assert second.returncode == 0, second.stderr
    assert found[0].stat().st_mtime_ns == written
    assert not list(pycache.rglob("*.tmp"))


def test_a_worker_process_writes_what_it_compiled(tmp_path: Path):
    """A worker (started as `flow run` starts one) saves its texts once its imports are done, and a
    second worker finds them all: its start compiles none of the wire format's or the DSL's methods."""
    pycache = tmp_path / "pycache"
    env = {**_flow_env(pycache), "PYTHONPATH": str(Path(dataclass_cache.__file__).parent.parent)}

    def start_worker() -> None:
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        command = [sys.executable, "-P", "-m", "runner.executors.worker", str(to_r), str(from_w)]
        proc = subprocess.Popen(command, pass_fds=(to_r, from_w), env=env)
        os.close(to_r)
        os.close(from_w)
        os.close(to_w)  # no task: the worker ends once ready
        assert proc.wait(timeout=99) == 0
        os.close(from_r)

    start_worker()
    (found,) = pycache.rglob("dataclass_cache.*.dataclasses")
    texts = dataclass_cache._read(str(found))
    assert any("code_key" in text for text in texts)  # the wire format's `Task`
    written = found.stat().st_mtime_ns
    start_worker()
    assert found.stat().st_mtime_ns == written
