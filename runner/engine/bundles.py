"""Provides `CodeBundles`: the pickled code the engine ships to workers, cached per load of a flow.

A load's steps are pickled together in chunks of `CODE_CHUNK` (cloudpickle's per-call cost dominates
for small functions); a worker unpickles a chunk once and keeps it by key. A chunk that fails to load
where it runs is split: each of its steps is then shipped alone (`mark_broken`), so one step's
unpicklable global fails only that step.
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


class CodeBundles:
    """Pickled code by key: `load:chunk`, `load:step` (shipped alone) or `load:kind:step` (a probe)."""

    def __init__(self) -> None:
        self._codes: dict[str, bytes] = {}
        self._broken: set[str] = set()
        self._orders: dict[str, dict[str, int]] = {}

    def code(self, loaded: LoadedFlow, step_name: str) -> tuple[str, bytes, str]:
        """(code_key, pickled code, entry) for a step: its load's steps are pickled in chunks."""
        order = self._orders.get(loaded.load_id)
        if order is None:
            order = self._orders[loaded.load_id] = {n: i for i, n in enumerate(loaded.graph.order)}
            if len(self._orders) > KEPT_LOADS:
                self._orders.pop(next(iter(self._orders)))
        chunk = order[step_name] // CODE_CHUNK
        key = f"{loaded.load_id}:{chunk}"
        alone = key in self._broken
        if alone:
            key = f"{loaded.load_id}:{step_name}"
        code = self._codes.get(key)
        if code is None:
            start = chunk * CODE_CHUNK
            names = [step_name] if alone else loaded.graph.order[start : start + CODE_CHUNK]
            _by_value(loaded)
            try:
                code = pickle_code({n: shipped_function(loaded.graph.nodes[n].step) for n in names})
            except Exception:
                key = f"{loaded.load_id}:{step_name}"
                code = self._codes.get(key) or pickle_code(
                    {step_name: shipped_function(loaded.graph.nodes[step_name].step)}
                )
            self._codes[key] = code
            if len(self._codes) > KEPT_BUNDLES:
                self._codes.pop(next(iter(self._codes)))
        return key, code, step_name

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
