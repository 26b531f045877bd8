"""Provides `CodeBundles`: the pickled code the engine ships to workers, cached per load of a flow.

A load's steps are pickled together in chunks (cloudpickle's per-call cost dominates for small
functions); a worker unpickles a chunk once and keeps it by key. Chunks grow as a load's steps are
asked for: the first holds only the step asked for, each next one twice as many steps as the one
before (from the step asked for, in the graph's order), up to `CODE_CHUNK`. A cold run of a large
flow makes a few more chunks than fixed ones would; a re-run after a save, which executes one step
or a few, no longer pickles (and its worker unpickles) 64 steps to run one: ~2 ms of the 20 a
reload may take. A chunk that fails to load where it runs is split: each of its steps is then
shipped alone (`mark_broken`), so one step's unpicklable global fails only that step.

A local module the steps use as a module (`import helpers`, then `helpers.f(x)`) is pickled once per
load, apart from the chunks (`runner.shipping.pickle_shipped`), and a worker is sent it once
(`runner.executors.local.LocalExecutor`), not inside every chunk. Steps of one load that run in one
worker then share that module, as the steps of one chunk always did; a step that rebinds one of its
attributes retires its worker (`runner.executors.isolation`). A new load ships its modules under keys
of its own; a module whose namespace equals the last load's (`runner.shipping.same_namespace`) reuses
that pickle, which is all a save of the flow file alone changes for it.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import NamedTuple

import cloudpickle

from dsl.connected import shipped_function
from dsl.loader import LoadedFlow
from runner.probes import foreach_probe, when_probe
from runner.shipping import module_state, pickle_shipped, same_namespace

CODE_CHUNK = 64
"""Steps pickled together per code bundle."""
KEPT_LOADS = 8
"""Loads whose step order is remembered (a watch session reloads the flow at every save)."""
KEPT_BUNDLES = 4096
KEPT_MODULES = 256
"""Shipped modules kept pickled (a module per load: a watch session makes a load per save)."""


class _Chunks:
    """How one load's steps are chunked so far: each step's chunk, and each chunk's steps."""

    __slots__ = ("index", "of", "members")

    def __init__(self, loaded: LoadedFlow) -> None:
        self.index = {n: i for i, n in enumerate(loaded.graph.order)}
        self.of: dict[str, str] = {}
        """Step -> the key of the chunk it was pickled in."""
        self.members: dict[str, list[str]] = {}
        """Chunk key -> its steps (to pickle it again once `KEPT_BUNDLES` has dropped it)."""


Module = tuple[str, str, bytes]
"""A shipped local module: key, name, pickled namespace (`runner.executors.base.Task.modules`)."""


class Bundle(NamedTuple):
    """A step's code as a worker gets it."""

    key: str
    code: bytes
    entry: str
    modules: tuple[Module, ...]


class CodeBundles:
    """Pickled code by key: `load:first+count` (a chunk), `load:step` (a step shipped alone: a chunk
    of one, or a step of a broken chunk) or `load:kind:step` (a probe); and the load's local modules
    the code refers to, pickled once each (`runner.shipping.pickle_shipped`)."""

    def __init__(self) -> None:
        self._codes: dict[str, tuple[bytes, tuple[Module, ...]]] = {}
        self._modules: dict[str, tuple[Module, dict[str, types.ModuleType]]] = {}
        """Module key -> the module as shipped, and the modules its namespace refers to by key."""
        self._last: dict[str, tuple[types.ModuleType, tuple[Module, dict[str, types.ModuleType]]]] = {}
        """Module name -> the last module of that name shipped, and how (see `_ship`)."""
        self._broken: set[str] = set()
        self._chunks: dict[str, _Chunks] = {}

    def code(self, loaded: LoadedFlow, step_name: str) -> Bundle:
        """A step's code: its load's steps are pickled in chunks."""
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
        shipped = self._codes.get(key)
        if shipped is None:
            _by_value(loaded)
            try:
                shipped = self._pickle(
                    loaded, {n: shipped_function(loaded.graph.nodes[n].step) for n in names}
                )
            except Exception:
                self._broken.add(key)  # the chunk's other steps go alone too, without trying it again
                key = f"{loaded.load_id}:{step_name}"
                shipped = self._codes.get(key) or self._pickle(
                    loaded, {step_name: shipped_function(loaded.graph.nodes[step_name].step)}
                )
            self._keep(key, shipped)
        return Bundle(key, shipped[0], step_name, shipped[1])

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

    def probe_code(self, loaded: LoadedFlow, name: str, kind: str) -> Bundle:
        """A step's probe: its predicate, or the foreach iteration."""
        key = f"{loaded.load_id}:{kind}:{name}"
        shipped = self._codes.get(key)
        if shipped is None:
            step = loaded.graph.nodes[name].step
            _by_value(loaded)
            fn: Callable[..., object]
            if kind == "when":
                assert step.when is not None
                fn = when_probe(step.when)
            else:
                assert step.foreach is not None
                fn = foreach_probe(step.foreach)
            shipped = self._pickle(loaded, {kind: fn})
            self._keep(key, shipped)
        return Bundle(key, shipped[0], kind, shipped[1])

    def _keep(self, key: str, shipped: tuple[bytes, tuple[Module, ...]]) -> None:
        self._codes[key] = shipped
        if len(self._codes) > KEPT_BUNDLES:
            self._codes.pop(next(iter(self._codes)))

    def _ship(
        self, loaded: LoadedFlow, key: str, module: types.ModuleType
    ) -> tuple[Module, dict[str, types.ModuleType]]:
        """A module as shipped under `key`: its namespace pickled, or the last load's pickle of the same
        module when the namespace is the same (`runner.shipping.same_namespace`): a save of the flow
        file imports the user's unchanged modules again, and pickling a 1,750-line one took 5-7 ms of
        each re-run's start. Still under this load's key: the worker rebuilds it afresh, so nothing a
        step did to the last load's copy carries over."""
        last = self._last.get(module.__name__)
        if last is not None and not last[1][1] and same_namespace(last[0], module):
            entry: tuple[Module, dict[str, types.ModuleType]] = ((key, module.__name__, last[1][0][2]), {})
        else:
            data, refers = pickle_shipped(module_state(module), loaded.load_id, loaded.local_modules)
            entry = ((key, module.__name__, data), refers)
        self._last[module.__name__] = (module, entry)
        return entry

    def _pickle(self, loaded: LoadedFlow, functions: dict[str, object]) -> tuple[bytes, tuple[Module, ...]]:
        """The functions pickled, and every module they refer to, directly or through another module."""
        code, wanted = pickle_shipped(functions, loaded.load_id, loaded.local_modules)
        modules: dict[str, Module] = {}
        while wanted:
            key, module = wanted.popitem()
            if key in modules:
                continue
            kept = self._modules.get(key)
            if kept is None:
                kept = self._modules[key] = self._ship(loaded, key, module)
                if len(self._modules) > KEPT_MODULES:
                    self._modules.pop(next(iter(self._modules)))
            modules[key] = kept[0]
            wanted.update((k, m) for k, m in kept[1].items() if k not in modules)
        return code, tuple(modules.values())


def _by_value(loaded: LoadedFlow) -> None:
    """The flow's modules travel by value: a worker need not (and must not) import the user's files."""
    for module_name in [loaded.module.__name__, *loaded.local_modules]:
        if module_name in sys.modules:
            cloudpickle.register_pickle_by_value(sys.modules[module_name])
