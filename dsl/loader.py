"""Provides `load_flow`: execute a flow file in a fresh namespace and build its graph.

Every load re-executes the flow file and the user's own modules it imports (`dsl.locality`: under the
flow file's directory, on `PYTHONPATH`, an editable install; never installed or standard-library
code), compiled from the source text read at that moment and
never from `__pycache__`: a `.pyc` is validated by mtime and size, so two quick edits of equal size
would otherwise run old code. The source text of each of those files is kept on the result so that
fingerprints hash exactly the code that runs.

The file's suffix picks the language: `.py` is executed, `.yaml`/`.yml` is compiled by
`dsl.yamlflow` (its `uses:` modules imported the same way); both give the same graph.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
import threading
import traceback
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsl import codecache, flowcode, splitcompile, wiring
from dsl.errors import FlowError
from dsl.flow import Flow
from dsl.gcpause import gc_paused
from dsl.graph import Graph, build_graph
from dsl.locality import is_user_file
from dsl.step import Step
from dsl.wiring import Edge

if TYPE_CHECKING:
    from dsl.yamlflow import YamlFlow

_OWN_PACKAGES = ("dsl", "runner", "tui")
FLOW_SUFFIXES = (".py", ".yaml", ".yml")
_lock = threading.RLock()
_roots: set[Path] = set()
_recording: list[dict[str, str]] = []


@dataclass
class LoadedFlow:
    """A flow file loaded once: its graph and everything needed to fingerprint and ship its code.

    Attributes:
        path: the flow file, absolute.
        name: the flow's name (`Flow(name)` or the file's stem).
        description: `Flow(description=...)`.
        graph: the validated graph.
        module: the namespace the file was executed in.
        root: the project directory (the flow file's directory); local modules live below it.
        sources: absolute path -> source text, for the flow file and every local module it imported.
        local_modules: module name -> absolute path of each local module imported while loading.
        search_paths: the `sys.path` directories those modules were found in (a worker needs them
            to import the same modules inside a step body: `PYTHONPATH`, a `sys.path.insert`).
        load_id: unique per load; code shipped to workers is keyed by it.
        outputs: flow output name -> (step, name of one of its outputs or None for the whole output):
            YAML `outputs:` or `Flow(outputs=...)`.
        declaration: the file's `Flow(...)`, if any: its schedule, loop and hook options.
    """

    path: Path
    name: str
    description: str
    graph: Graph
    module: types.ModuleType
    root: Path
    sources: dict[str, str] = field(default_factory=dict)
    local_modules: dict[str, str] = field(default_factory=dict)
    search_paths: tuple[str, ...] = ()
    load_id: str = ""
    outputs: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    declaration: Flow | None = None

    @property
    def watch_paths(self) -> list[Path]:
        """The files whose edit should reload this flow."""
        return [Path(p) for p in self.sources]


compiled: dict[str, str] = {}
"""Absolute path -> SHA-256 of the source text each local module was last compiled from in this
process: what a worker checks against the text the fingerprint hashed (`runner.freshness`)."""


class _FreshSourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles a local module from its current source text, never from a cached `.pyc` (whose
    freshness check trusts modification times); code is reused only for exactly the same text
    (`dsl.codecache.module_code`)."""

    def get_code(self, fullname: str) -> types.CodeType:
        path = self.get_filename(fullname)
        source = Path(path).read_text(encoding="utf-8")
        resolved = str(Path(path).resolve())
        compiled[resolved] = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
        for record in _recording:
            record[resolved] = source
        return codecache.module_code(source, path)


class _LocalFinder:
    """Routes the user's own modules (`dsl.locality.is_user_file`) to `_FreshSourceLoader`: those
    under the flow's directory, and those found elsewhere on `sys.path` (a sibling directory on
    `PYTHONPATH`, an editable install of the user's package, a directory added at run time).

    A meta path finder needs only `find_spec` (not `importlib.abc.MetaPathFinder`, whose import
    brings `importlib.resources`, `tempfile` and `shutil` into every run and every worker)."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] in _OWN_PACKAGES or not _roots:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return None
        origin = Path(spec.origin).resolve()
        if not _is_local(origin):
            return None
        spec.loader = _FreshSourceLoader(fullname, spec.origin)
        return spec


def _is_local(path: Path) -> bool:
    return is_user_file(str(path))


_finder = _LocalFinder()


def install_local_imports(root: Path) -> None:
    """Make modules under `root` importable and always compiled from their current source."""
    with _lock:
        _roots.add(root)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))


_loaded_names: set[str] = set()
"""Modules some load of a flow imported: the next load imports them again from their source."""
_under_roots: dict[tuple[str, int], bool] = {}


def _purge_local_modules() -> None:
    """Forget the user's modules a load imported, and any of the user's modules under a project root
    (a step body's import run in this process): the next load imports them from their source. Other
    modules are left alone: a test suite's own modules imported after a load are not the flow's."""
    for name, module in list(sys.modules.items()):
        if name in _loaded_names:
            del sys.modules[name]
            continue
        file = getattr(module, "__file__", None)
        if not file or name.partition(".")[0] in _OWN_PACKAGES:
            continue
        key = (file, len(_roots))
        under = _under_roots.get(key)
        if under is None:
            resolved = _real_path(file)
            inside = any(resolved.startswith(os.path.join(r, "")) for r in map(str, _roots))
            under = _under_roots[key] = inside and is_user_file(resolved)
        if under:
            del sys.modules[name]


_real_dirs: dict[str, str] = {}


def _real_path(file: str) -> str:
    """`os.path.realpath(file)`, each directory resolved once: a process's first load looks at every
    module imported so far (~230 for `flow run`), and resolving each path component of each took ~6 ms."""
    if os.path.islink(file):
        return os.path.realpath(file)
    directory, name = os.path.split(os.path.abspath(file))
    real = _real_dirs.get(directory)
    if real is None:
        real = _real_dirs[directory] = os.path.realpath(directory)
    return os.path.join(real, name)


_counter = 0


def load_flow(path: str | Path) -> LoadedFlow:
    """Load a flow file into a fresh namespace and build its graph.

    Raises:
        FlowError: the file is missing or not Python, has a syntax error, fails while importing,
            defines no step, or its graph is invalid. The message names the file and line.
    """
    with gc_paused():
        return _load_flow(path)


def _load_flow(path: str | Path) -> LoadedFlow:
    global _counter
    shown = str(path)
    flow_path, source, code = _read_flow_file(path)
    root = flow_path.parent
    with _lock:
        install_local_imports(root)
        _counter += 1
        digest = hashlib.sha256(str(flow_path).encode()).hexdigest()[:8]
        # The same name for every load of this file: classes and functions defined in it are pickled by
        # value with their module's name, so a counter here would make equal outputs hash differently.
        module_name = f"__flow__{flow_path.stem}_{digest}"
        module = types.ModuleType(module_name)
        module.__file__ = str(flow_path)
        sources: dict[str, str] = {str(flow_path): source}
        _purge_local_modules()
        before = set(sys.modules)  # after the purge: a reload imports the same modules again
        recorded, document = _execute(module, code, source, flow_path, sources, shown)
        local_modules = _new_local_modules(before, module_name, sources)
        _loaded_names.update(local_modules)

    flow_decl: Flow | None = None
    if document is not None:
        graph = build_graph(document.steps, document.edges)
        name = document.name or flow_path.stem
        description = document.description
        outputs = document.outputs
        flow_decl = document.declaration
    else:
        graph, flow_decl = _python_graph(module, recorded, flow_path, shown)
        name = (flow_decl.name if flow_decl and flow_decl.name else None) or flow_path.stem
        description = flow_decl.description if flow_decl else ""
        outputs = flow_decl.output_refs(graph) if flow_decl else {}
    connected = any(node.step.connections for node in graph.nodes.values())
    if connected:
        from dsl.connected import connect_steps  # only then: it reads flow.toml (tomllib)

        connect_steps(graph, root)
    if connected or any(node.step.spec is not None for node in graph.nodes.values()):
        _record_project_file(root, sources)
    return LoadedFlow(
        path=flow_path,
        name=name,
        description=description,
        graph=graph,
        module=module,
        root=root,
        sources=sources,
        local_modules=local_modules,
        search_paths=_search_paths(local_modules),
        load_id=f"{digest}-{_counter}-{hashlib.sha256(source.encode()).hexdigest()[:8]}",
        outputs=outputs,
        declaration=flow_decl,
    )


def _read_flow_file(path: str | Path) -> tuple[Path, str, tuple[types.CodeType, ...] | None]:
    """The flow file's absolute path, its text, and its compiled code, in parts to execute in order
    (`dsl.flowcode`; None for a YAML flow).

    Raises:
        FlowError: not a readable flow file, or a Python syntax error (with its line).
    """
    flow_path = Path(path).expanduser()
    shown = str(path)
    if not flow_path.exists():
        raise FlowError("no such file", file=shown)
    if flow_path.is_dir():
        raise FlowError("is a directory; give a flow file (.py, .yaml or .yml)", file=shown)
    if flow_path.suffix.lower() not in FLOW_SUFFIXES:
        raise FlowError("is not a flow file: a flow is a .py, .yaml or .yml file", file=shown)
    if not flow_path.is_file():
        raise FlowError("is not a regular file (a FIFO or a device?); give a flow file", file=shown)
    flow_path = flow_path.resolve()
    try:
        source = flow_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowError(f"cannot read the file: {exc}", file=shown) from None
    if flow_path.suffix.lower() != ".py":
        return flow_path, source, None
    try:
        code = compile_flow(source, str(flow_path))
    except SyntaxError as exc:
        raise FlowError(
            f"syntax error: {exc.msg}", file=str(exc.filename or shown), line=exc.lineno
        ) from None
    except ValueError as exc:
        raise FlowError(f"cannot compile the file: {exc}", file=shown) from None
    return flow_path, source, code


def compile_flow(source: str, filename: str) -> tuple[types.CodeType, ...]:
    """The flow file's code, to execute in order in one namespace: compiled whole on its first load (a
    large file in two halves at once, `dsl.splitcompile`; or taken from the code an earlier process
    kept for exactly this text: `dsl.codecache`), then in parts (`dsl.flowcode`), each reused while
    its text, line and flags are unchanged.

    Raises:
        SyntaxError, ValueError: as `compile` does for the whole file.
    """
    previous = flowcode.parts_of(filename)
    if previous is not None:
        try:
            codes, latest = flowcode.compile_parts(source, filename, previous)
        except (SyntaxError, ValueError):
            pass  # the whole file, below, reports the real error (or compiles a file cut wrongly)
        else:
            flowcode.keep(filename, latest)
            return codes
    flowcode.keep(filename, {})
    kept = codecache.cached_code(source, filename)
    if kept is None:
        kept = splitcompile.compile_split(source, filename) or (
            compile(source, filename, "exec", dont_inherit=True),
        )
        codecache.keep_code(source, filename, kept)
    flowcode.keep_whole(filename, source, kept)
    return kept


def _execute(
    module: types.ModuleType,
    code: tuple[types.CodeType, ...] | None,
    source: str,
    flow_path: Path,
    sources: dict[str, str],
    shown: str,
) -> tuple[wiring.Wiring, YamlFlow | None]:
    """Run the flow file in `module` (or compile its YAML), recording the `>>` edges and `Flow(...)`s it
    declares and the text of every local module it imports (into `sources`). Called under `_lock`.

    Raises:
        FlowError: the file failed while loading (its module is forgotten again).
    """
    _recording.append(sources)
    sys.modules[module.__name__] = module
    recorded = wiring.push()
    try:
        if code is not None:
            for part in code:
                exec(part, module.__dict__)
            return recorded, None
        from dsl.yamlflow import compile_yaml

        return recorded, compile_yaml(source, str(flow_path), flow_path.parent)
    except FlowError:
        sys.modules.pop(module.__name__, None)
        raise
    except SystemExit as exc:
        sys.modules.pop(module.__name__, None)
        raise FlowError(f"the flow file called sys.exit({exc.code!r}) while loading", file=shown) from None
    except Exception as exc:
        sys.modules.pop(module.__name__, None)
        raise _import_error(exc, flow_path, sources) from None
    finally:
        wiring.pop(recorded)
        _recording.remove(sources)


def _new_local_modules(before: set[str], module_name: str, sources: dict[str, str]) -> dict[str, str]:
    """Module name -> absolute path of each local module (one whose text was recorded) imported since
    `before` was taken."""
    found: dict[str, str] = {}
    for name, mod in list(sys.modules.items()):
        if name in before or name == module_name:
            continue
        file = getattr(mod, "__file__", None)
        path = str(Path(file).resolve()) if file else None
        if path is not None and path in sources:
            found[name] = path
    return found


def _python_graph(
    module: types.ModuleType, recorded: wiring.Wiring, flow_path: Path, shown: str
) -> tuple[Graph, Flow | None]:
    """A Python flow's graph, from the steps its namespace holds and the edges it wired, and its
    `Flow(...)` declaration, if any.

    Raises:
        FlowError: it defines no step, or its graph is invalid.
    """
    steps = [value for value in vars(module).values() if isinstance(value, Step)]
    edges = _own_edges(recorded.edges, steps, str(flow_path))
    if not steps and not edges:
        raise FlowError("defines no step; decorate a function with @step", file=shown)
    graph = build_graph(steps, edges)
    declared = [f for f in vars(module).values() if isinstance(f, Flow)] or [
        f
        for f in recorded.flows
        if f.file == str(flow_path)  # not the `Flow(...)` of an imported flow file
    ]
    return graph, declared[0] if declared else None


def _record_project_file(root: Path, sources: dict[str, str]) -> None:
    """External steps read their connections from flow.toml (or pyproject.toml): watch it too, so an
    edited connection reloads the flow."""
    from dsl.connections import project_file

    found = project_file(root)
    if found is not None:
        try:
            sources.setdefault(str(found.resolve()), found.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            pass


def _own_edges(edges: list[Edge], steps: list[Step], flow_file: str) -> list[Edge]:
    """The `>>` edges of this flow: those written in the flow file, and those between two steps it
    holds. Importing a step from another flow file brings the step, not that flow's wiring (its
    `load >> total` would otherwise add `total` to this flow)."""
    held = {id(s) for s in steps}
    return [e for e in edges if e.file == flow_file or (id(e.upstream) in held and id(e.downstream) in held)]


def _search_paths(local_modules: dict[str, str]) -> tuple[str, ...]:
    """The `sys.path` directory each local module was found in (its file minus its dotted name)."""
    found: dict[str, None] = {}
    for name, file in local_modules.items():
        path = Path(file)
        depth = name.count(".") + (1 if path.name == "__init__.py" else 0)
        found[str(path.parents[depth])] = None
    return tuple(found)


def _import_error(exc: BaseException, flow_path: Path, sources: dict[str, Any]) -> FlowError:
    """Turn an exception raised while executing a flow file into one line naming where it happened."""
    file, line = str(flow_path), None
    for frame in traceback.extract_tb(exc.__traceback__):
        if str(Path(frame.filename).resolve()) in sources or frame.filename == str(flow_path):
            file, line = frame.filename, frame.lineno
    if isinstance(exc, SyntaxError):
        return FlowError(f"syntax error: {exc.msg}", file=str(exc.filename or file), line=exc.lineno)
    return FlowError(f"error while loading the flow: {type(exc).__name__}: {exc}", file=file, line=line)
