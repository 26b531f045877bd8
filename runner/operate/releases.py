"""Provides releases: a flow's code and parameter defaults frozen in the store as `NAME@1`, `NAME@2`…

`flow release FILE` stores the exact source text the loader read (the flow file and every local
module it imported: `LoadedFlow.sources`, the closure the fingerprints hash) and the parameter
defaults. A release row is never updated. To run one, its files are written from the store into
`.flow/releases/NAME@VERSION/` (checked against the stored text on every use, rewritten if anything
there changed) and loaded from there, so the working files can change, move or disappear.

A run of a release is linked to it by `link_releases`, an engine subscriber that recognises the
release directory in a run's file; `flow show` prints the link.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsl.errors import FlowError
from dsl.loader import LoadedFlow, load_flow
from dsl.params import REQUIRED
from runner.engine import Engine
from runner.events import Event, RunStarted
from runner.store import Store

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
RELEASE_DIR = "releases"


@dataclass(frozen=True)
class Release:
    """One stored release (without its sources)."""

    name: str
    version: int
    flow: str
    file: str
    created: bool = True
    """False when the code and defaults were identical to the latest version: nothing was added."""

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


def is_release_ref(text: str) -> bool:
    """Whether a `flow run` target is `NAME@VERSION`/`NAME@latest` rather than a file that exists."""
    return "@" in text and not Path(text).exists()


def parse_ref(text: str) -> tuple[str, int | None]:
    """`nightly@3` -> ("nightly", 3); `nightly@latest` -> ("nightly", None).

    Raises:
        FlowError: not NAME@VERSION or NAME@latest.
    """
    name, _, version = text.rpartition("@")
    if not _NAME.fullmatch(name) or not (version == "latest" or version.isdigit()):
        raise FlowError(f"{text!r} is not a release: use NAME@VERSION (e.g. nightly@2) or NAME@latest")
    return name, None if version == "latest" else int(version)


def frozen_params(loaded: LoadedFlow) -> dict[str, Any]:
    """The flow's parameter defaults that JSON keeps exactly (others stay in the frozen source)."""
    frozen = {}
    for name, spec in loaded.graph.params.items():
        if spec.default is REQUIRED:
            continue
        try:
            if json.loads(json.dumps(spec.default)) == spec.default:
                frozen[name] = spec.default
        except (TypeError, ValueError):
            continue
    return frozen


def create_release(store: Store, loaded: LoadedFlow, name: str | None = None) -> Release:
    """Freeze `loaded` as the next version of release `name` (default: the flow's name).

    Raises:
        FlowError: an invalid name, a name already used by another flow's releases, or a local
            module outside the flow's directory (it could not be laid out again).
    """
    name = name or loaded.name
    if not _NAME.fullmatch(name):
        raise FlowError(f"release name {name!r} must be letters, digits, '_', '.' or '-' (no '@')")
    root = loaded.path.parent
    modules = {str(Path(p)) for p in loaded.local_modules.values()}
    sources: dict[str, str] = {}
    for path, text in loaded.sources.items():
        try:
            sources[Path(path).relative_to(root).as_posix()] = text
        except ValueError:
            if path not in modules:
                continue  # a project file found above the flow (flow.toml): read where the release runs
            raise FlowError(
                f"the flow imports {path}, outside its directory {root}; a release can only freeze "
                "modules that live beside or below the flow file",
                file=str(loaded.path),
            ) from None
    file = loaded.path.relative_to(root).as_posix()
    params = frozen_params(loaded)
    digest = hashlib.sha256(
        json.dumps({"file": file, "sources": sources, "params": params}, sort_keys=True).encode()
    ).hexdigest()
    latest = store.get_release(name)
    if latest is not None:
        if latest["flow"] != loaded.name:
            raise FlowError(
                f"release name {name!r} is taken by flow {latest['flow']!r} "
                f"({name}@{latest['version']}); choose another with --name"
            )
        if latest["digest"] == digest:
            return Release(name, latest["version"], loaded.name, latest["file"], created=False)
    version = store.add_release(name, loaded.name, file, digest, sources, params)
    return Release(name, version, loaded.name, file)


def load_release(store: Store, ref: str) -> tuple[LoadedFlow, dict[str, Any]]:
    """Lay out and load release `ref` (`NAME@VERSION` or `NAME@latest`); return it and its frozen
    parameter defaults (to apply beneath the user's `-p` values).

    Raises:
        FlowError: no such release (the message lists the versions there are), or it does not load.
    """
    name, version = parse_ref(ref)
    release = store.get_release(name, version)
    if release is None:
        versions = [r["version"] for r in store.list_releases(name)]
        if versions:
            have = ", ".join(f"{name}@{v}" for v in sorted(versions))
            raise FlowError(f"no release {ref}; there are {have}")
        names = sorted({r["name"] for r in store.list_releases()})
        known = f"; releases here: {', '.join(names)}" if names else "; `flow release FILE` makes one"
        raise FlowError(f"no release named {name!r} in the store at {store.root}{known}")
    path = materialise(store, release)
    return load_flow(path), dict(release["params"])


def release_dir(store: Store) -> Path:
    """Where releases are laid out as files, one directory per `NAME@VERSION`, inside the store."""
    return store.root.resolve() / RELEASE_DIR


def materialise(store: Store, release: dict[str, Any]) -> Path:
    """Write a release's files under the store (unless already there, unchanged); return its flow file."""
    target = release_dir(store) / f"{release['name']}@{release['version']}"
    sources: dict[str, str] = release["sources"]
    flow_file: str = release["file"]
    if target.is_dir() and all(_reads(target / rel) == text for rel, text in sources.items()):
        return target / flow_file
    import shutil  # here: a run of a plain file never lays out a release
    import tempfile

    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    for rel, text in sources.items():
        path = staging / rel
        if not path.resolve().is_relative_to(staging.resolve()):
            raise FlowError(f"release {target.name} holds a file outside its directory: {rel}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if target.exists():
        shutil.rmtree(target, ignore_errors=True)
    try:
        staging.rename(target)
    except OSError:
        # Another process laid out the same release at the same moment: use theirs.
        shutil.rmtree(staging, ignore_errors=True)
    return target / flow_file


def _reads(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def release_of_file(store: Store, file: str) -> tuple[str, int] | None:
    """The release a flow file belongs to, if it lies in this store's release directory."""
    try:
        relative = Path(file).relative_to(release_dir(store))
    except ValueError:
        return None
    name, _, version = relative.parts[0].rpartition("@") if relative.parts else ("", "", "")
    return (name, int(version)) if name and version.isdigit() else None


def link_releases(engine: Engine, store: Store) -> None:
    """Record, for every run of a release on this engine, which release it ran (see `flow show`)."""

    def on_event(event: Event) -> None:
        if isinstance(event, RunStarted):
            found = release_of_file(store, event.file)
            if found is not None:
                store.link_run_release(event.run_id, *found)

    engine.subscribe(on_event)


def open_target(
    target: str, overrides: dict[str, Any], open_store: Callable[[], Store]
) -> tuple[LoadedFlow, dict[str, Any], Store | None]:
    """What `flow run TARGET` runs: a flow file, or a release (`NAME@VERSION`, `NAME@latest`).

    Returns the loaded flow, the parameter overrides (a release's frozen defaults beneath the
    user's values) and the store if it had to be opened (a release lives in it).
    """
    if not is_release_ref(target):
        return load_flow(target), overrides, None
    parse_ref(target)
    store = open_store()
    loaded, frozen = load_release(store, target)
    return loaded, {**frozen, **overrides}, store
