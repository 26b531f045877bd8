"""Provides `CodeBundles`: the pickled code the engine ships to workers, cached per load of a flow.

A load's steps are pickled together in chunks (cloudpickle's per-call cost dominates for small
functions); a worker unpickles a chunk once and keeps it by key. Chunks grow as a load's steps are
asked for: the first holds only the step asked for, each next one twice as many steps as the one
before (from the step asked for, in the graph's order), up to `CODE_CHUNK`. A cold run of a large
flow makes a few more chunks than fixed ones would; a re-run after a save, which executes one step
or a few, no longer pickles (and its worker unpickles) 64 steps to run one: ~2 ms of the 20 a
reload may take. A chunk that fails to load where it runs is split: each of its steps is then
shipped alone (`mark_broken`), so one step's unpicklable global fails only that step.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import cloudpickle

from dsl.connected import shipped_function
from dsl.loader import LoadedFlow
from runner.probes import foreach_probe, when_probe
from runner.shipping import pickle_code

CODE_CHUNK = 64
"""Steps pickled together per code bundle."""
KEPT_LOADS = 8
"""Loads whose step order is remembered (a watch session reloads the flow at every save)."""
KEPT_BUNDLES = 4096


class _Chunks:
    """How one load's steps are chunked so far: each step's chunk, and each chunk's steps."""

    __slots__ = ("index", "of", "members")

    def __init__(self, loaded: LoadedFlow) -> None:
        self.index = {n: i for i, n in enumerate(loaded.graph.order)}
        self.of: dict[str, str] = {}
        """Step -> the key of the chunk it was pickled in."""
        self.members: dict[str, list[str]] = {}
        """Chunk key -> its steps (to pickle it again once `KEPT_BUNDLES` has dropped it)."""


class CodeBundles:
    """Pickled code by key: `load:first+count` (a chunk), `load:step` (a step shipped alone: a chunk
    of one, or a step of a broken chunk) or `load:kind:step` (a probe)."""

    def __init__(self) -> None:
        self._codes: dict[str, bytes] = {}
        self._broken: set[str] = set()
        self._chunks: dict[str, _Chunks] = {}

    def code(self, loaded: LoadedFlow, step_name: str) -> tuple[str, bytes, str]:
        """(code_key, pickled code, entry) for a step: its load's steps are pickled in chunks."""
        chunks = self._chunks.get(loaded.load_id)
        if chunks is None:
            chunks = self._chunks[loaded.load_id] = _Chunks(loaded)
            if len(self._chunks) > KEPT_LOADS:
                self._chunks.pop(next(iter(self._chunks)))
        key = chunks.of.get(step_name)
        if key is None:
            key = self._new_chunk(loaded, chunks, step_name)
        names = chunks.members[key]
        if key in self._broken:
            key, names = f"{loaded.load_id}:{step_name}", [step_name]
        code = self._codes.get(key)
        if code is None:
            _by_value(loaded)
            try:
                code = pickle_code({n: shipped_function(loaded.graph.nodes[n].step) for n in names})
            except Exception:
                self._broken.add(key)  # the chunk's other steps go alone too, without trying it again
                key = f"{loaded.load_id}:{step_name}"
                code = self._codes.get(key) or pickle_code(
                    {step_name: shipped_function(loaded.graph.nodes[step_name].step)}
                )
            self._codes[key] = code
            if len(self._codes) > KEPT_BUNDLES:
                self._codes.pop(next(iter(self._codes)))
        return key, code, step_name

    def _new_chunk(self, loaded: LoadedFlow, chunks: _Chunks, step_name: str) -> str:
        """Chunk the step with the steps after it in the graph's order not chunked yet: one step
        for a load's first chunk, twice the last chunk's size for each next one (see the module)."""
        size = min(CODE_CHUNK, 1 << len(chunks.members))
        order = loaded.graph.order
        names = [step_name]
        at = chunks.index[step_name] + 1
        while len(names) < size and at < len(order) and order[at] not in chunks.of:
            names.append(order[at])
            at += 1
        key = (
            f"{loaded.load_id}:{step_name}"
            if len(names) == 1
            else f"{loaded.load_id}:{at - len(names)}+{len(names)}"
        )
        chunks.members[key] = names
        for name in names:
            chunks.of[name] = key
        return key

    def mark_broken(self, code_key: str) -> None:
        """The bundle `code_key` failed to load where it ran: ship its steps alone from now on."""
        self._broken.add(code_key)

    def probe_code(self, loaded: LoadedFlow, name: str, kind: str) -> tuple[str, bytes]:
        """(code_key, pickled code) of a step's probe: its predicate, or the foreach iteration."""
        key = f"{loaded.load_id}:{kind}:{name}"
        code = self._codes.get(key)
        if code is None:
            step = loaded.graph.nodes[name].step
            _by_value(loaded)
            fn: Callable[..., object]
            if kind == "when":
                assert step.when is not None
                fn = when_probe(step.when)
            else:
                assert step.foreach is not None
                fn = foreach_probe(step.foreach)
            code = self._codes[key] = pickle_code({kind: fn})
        return key, code


def _by_value(loaded: LoadedFlow) -> None:
    """The flow's modules travel by value: a worker need not (and must not) import the user's files."""
    for module_name in [loaded.module.__name__, *loaded.local_modules]:
        if module_name in sys.modules:
            cloudpickle.register_pickle_by_value(sys.modules[module_name])
