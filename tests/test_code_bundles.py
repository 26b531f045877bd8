"""How the engine chunks a load's step code for workers (`runner.engine.bundles.CodeBundles`): a load's
first chunk is the step asked for alone (a re-run after a save executes one step or a few: it must
not pickle, nor a worker unpickle, 64 steps to run one), each next chunk twice the size up to
`CODE_CHUNK`, every step in exactly one chunk, and a chunk that fails to load is split. Real loads of
real flow files; the pickled code is unpickled and called."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import chain_source
from dsl import load_flow
from runner.engine.bundles import CODE_CHUNK, CodeBundles


def _functions(code: bytes) -> dict[str, Callable[..., object]]:
    functions: dict[str, Callable[..., object]] = pickle.loads(code)
    return functions


def test_a_loads_first_chunk_is_the_step_asked_for_and_later_chunks_double(
    write_flow: Callable[..., Path],
) -> None:
    loaded = load_flow(write_flow(chain_source(300), name="chunked_flow.py"))
    bundles = CodeBundles()

    key, code, entry, _ = bundles.code(loaded, "s120")  # a re-run that executes one step of the middle
    assert entry == "s120" and key.endswith(":s120")
    assert list(_functions(code)) == ["s120"] and _functions(code)["s120"](4) == 5

    bundles = CodeBundles()  # a cold run asks for every step in order
    chunks: dict[str, list[str]] = {}
    for name in loaded.graph.order:
        key, code, entry, _ = bundles.code(loaded, name)
        if key not in chunks:
            chunks[key] = list(_functions(code))
        assert entry == name and name in chunks[key]
    sizes = [len(names) for names in chunks.values()]
    assert sizes == [1, 2, 4, 8, 16, 32, 64, 64, 64, 45] and CODE_CHUNK == 64
    everything = [name for names in chunks.values() for name in names]
    assert everything == loaded.graph.order  # each step in exactly one chunk, in order
    again = bundles.code(loaded, "s121")
    assert again[0] in chunks and again[1] is bundles.code(loaded, "s121")[1]  # kept, not pickled again


def test_a_new_load_starts_again_from_one_step(write_flow: Callable[..., Path]) -> None:
    path = write_flow(chain_source(100), name="reloaded_flow.py")
    bundles = CodeBundles()
    first = load_flow(path)
    for name in first.graph.order:
        bundles.code(first, name)
    second = load_flow(path)  # a save: a new load of the same file
    key, code, _, _ = bundles.code(second, "s50")
    assert key.startswith(f"{second.load_id}:") and list(_functions(code)) == ["s50"]


def test_a_broken_chunk_ships_each_of_its_steps_alone(write_flow: Callable[..., Path]) -> None:
    loaded = load_flow(write_flow(chain_source(20), name="broken_flow.py"))
    bundles = CodeBundles()
    bundles.code(loaded, "s0")
    key, code, _, _ = bundles.code(loaded, "s1")
    assert list(_functions(code)) == ["s1", "s2"]
    bundles.mark_broken(key)
    alone, code, entry, _ = bundles.code(loaded, "s2")
    assert alone.endswith(":s2") and entry == "s2" and list(_functions(code)) == ["s2"]
