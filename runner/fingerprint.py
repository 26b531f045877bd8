"""Provides fingerprints: what decides whether a stored result may be reused.

A step's fingerprint hashes, separately so that `flow show` can say *why* a step ran:

- `code`: its normalised source (parsed and unparsed: comments, formatting and docstrings do not count;
  decorators do not either, their result-changing options are hashed under `options`);
- `helpers`: each same-project function, class, module or constant it references, transitively, by
  qualified name (site-packages code counts by package version);
- `options`: `foreach`, `version` and the `when=` predicate;
- `command`: for an external step (`dsl.external`), its `Step.spec`: argv and env templates, image and
  digest, declared outputs, connection variables (a secret's value is never part of it);
- `params`: the values of the flow parameters it reads;
- `inputs`: the content hash of each upstream output (early cut-off: an upstream that re-runs and
  returns the same bytes does not invalidate its descendants).

Source comes from the text the loader read and compiled, never from `linecache` or `inspect`, which can
be stale right after an edit. When something cannot be hashed with confidence the step is marked
untrusted and always runs: never a stale result.
"""

from __future__ import annotations

import ast
import hashlib
import pickle
import sys
import textwrap
import types
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from dsl.loader import LoadedFlow
from dsl.step import Step

_TREES: OrderedDict[str, tuple[str, _SourceIndex]] = OrderedDict()
"""The latest parsed text of each source file, by path. Only the latest: a parsed file is tens of
thousands of AST objects, and keeping every saved version made each full garbage collection of a
long watch session slower (200-step flow, 40 saves: 50 ms, growing to 280 ms)."""
_TREE_CACHE_SIZE = 256
_CONSTANT_TYPES = (int, float, complex, str, bytes, bool, type(None), range, slice)


def _sha(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


class _SourceIndex:
    """One source file: its lines, and (parsed only when asked for) its definitions by line.

    Functions are usually found without parsing the file: `function_segment` cuts a function's text
    out by its code object's line span. The whole-file parse (a 1,400-line flow: ~23 ms, most of a
    reload) is left for classes, lambdas, and the rare function whose span does not parse alone.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self._tree: ast.Module | None = None
        self._functions: dict[int, ast.AST] = {}
        self._classes: dict[str, list[ast.ClassDef]] = {}
        self._lambdas: dict[int, list[ast.Lambda]] | None = None

    @property
    def tree(self) -> ast.Module:
        if self._tree is None:
            self._tree = ast.parse(self.text)
            for node in _statements(self._tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    self._functions[node.lineno] = node
                    if node.decorator_list:
                        self._functions.setdefault(node.decorator_list[0].lineno, node)
                elif isinstance(node, ast.ClassDef):
                    self._classes.setdefault(node.name, []).append(node)
        return self._tree

    @property
    def functions(self) -> dict[int, ast.AST]:
        """Function definitions by the line of their `def` and of their first decorator."""
        self.tree  # noqa: B018 - parses on first use
        return self._functions

    @property
    def classes(self) -> dict[str, list[ast.ClassDef]]:
        self.tree  # noqa: B018 - parses on first use
        return self._classes

    @property
    def lambdas(self) -> dict[int, list[ast.Lambda]]:
        """Lambdas by line; lambdas hide in expressions, so this walks the whole tree, once, on demand."""
        if self._lambdas is None:
            self._lambdas = {}
            for node in ast.walk(self.tree):
                if isinstance(node, ast.Lambda):
                    self._lambdas.setdefault(node.lineno, []).append(node)
        return self._lambdas

    def function_segment(self, code: types.CodeType) -> str | None:
        """A function's definition (decorators included), dedented, cut out by its code's line span;
        None unless it parses on its own as exactly that function.

        The span runs from `co_firstlineno` (the first decorator) to the last line any instruction
        of the function, or of code nested in it, comes from. Lines after it produce no code (a
        trailing `pass` still does); a body of only a docstring makes an unparsable cut, and the
        caller then falls back on the whole-file parse.
        """
        first, last = _code_span(code)
        segment = textwrap.dedent("".join(self.lines[first - 1 : last]))
        ok = _SEGMENTS.get(segment)
        if ok is None:
            try:
                body = ast.parse(segment).body
            except SyntaxError:
                body = []
            ok = _SEGMENTS[segment] = (
                len(body) == 1
                and isinstance(body[0], ast.FunctionDef | ast.AsyncFunctionDef)
                and body[0].name == code.co_name
            )
            if len(_SEGMENTS) > _SEGMENTS_CACHE_SIZE:
                _SEGMENTS.popitem(last=False)
        else:
            _SEGMENTS.move_to_end(segment)
        return segment if ok else None


_SEGMENTS: OrderedDict[str, bool] = OrderedDict()
"""Function segments seen, and whether each parses as its function (no trees kept: see `_TREES`)."""
_SEGMENTS_CACHE_SIZE = 20_000


def _code_span(code: types.CodeType) -> tuple[int, int]:
    """(first line, last line) of a function's source, from its code and the code nested in it."""
    first = last = code.co_firstlineno
    todo = [code]
    while todo:
        current = todo.pop()
        ends = [end or start or 0 for start, end, _, _ in current.co_positions()]
        last = max([last, *ends])
        todo.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return first, last


_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")


def _statements(node: ast.AST) -> Iterator[ast.AST]:
    """`node` and every statement nested in it (definitions and imports are statements), skipping the
    expressions a full `ast.walk` would also visit."""
    yield node
    for block in _BLOCKS:
        children = getattr(node, block, None)
        if isinstance(children, list):
            for child in children:
                if isinstance(child, ast.stmt | ast.excepthandler | ast.match_case):
                    yield from _statements(child)


def _index(path: str, text: str) -> _SourceIndex:
    digest = _sha(text)
    cached = _TREES.get(path)
    if cached is not None and cached[0] == digest:
        _TREES.move_to_end(path)
        return cached[1]
    index = _SourceIndex(text)
    _TREES[path] = (digest, index)
    _TREES.move_to_end(path)
    if len(_TREES) > _TREE_CACHE_SIZE:
        _TREES.popitem(last=False)
    return index


_NORMALISED: OrderedDict[str, str] = OrderedDict()
_NORMALISED_CACHE_SIZE = 20_000


def _strip_docstrings(tree: ast.AST) -> None:
    for inner in ast.walk(tree):
        if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module):
            body = inner.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                inner.body = body[1:] or [ast.Pass()]


def normalised(index: _SourceIndex, node: ast.AST, *, drop_decorators: bool) -> str:
    """A definition's source without comments, formatting, docstrings (and optionally decorators).

    Memoised by the definition's exact text, so a reload re-normalises only what was edited.
    """
    decorators = getattr(node, "decorator_list", None)
    first = node.lineno if drop_decorators or not decorators else decorators[0].lineno
    segment = textwrap.dedent("".join(index.lines[first - 1 : node.end_lineno]))
    return normalised_text(segment, drop_decorators=drop_decorators, node=node)


def normalised_text(segment: str, *, drop_decorators: bool, node: ast.AST | None = None) -> str:
    """`normalised` for a definition's text (`node`: its tree, if the text alone does not parse)."""
    key = f"{drop_decorators}:{segment}"
    cached = _NORMALISED.get(key)
    if cached is not None:
        _NORMALISED.move_to_end(key)
        return cached
    try:
        tree = ast.parse(segment)
    except SyntaxError:
        if node is None:
            raise
        tree = ast.Module(body=[node], type_ignores=[])
    _strip_docstrings(tree)
    if drop_decorators:
        for inner in tree.body:
            if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef):
                inner.decorator_list = []
    text = ast.unparse(tree)
    _NORMALISED[key] = text
    if len(_NORMALISED) > _NORMALISED_CACHE_SIZE:
        _NORMALISED.popitem(last=False)
    return text


@lru_cache(maxsize=512)
def _package_version(module_name: str) -> str:
    top = module_name.partition(".")[0]
    if top in sys.stdlib_module_names or top == "builtins":
        return f"python{sys.version_info.major}.{sys.version_info.minor}"
    import importlib.metadata

    try:
        return importlib.metadata.version(top)
    except Exception:
        module = sys.modules.get(top)
        return str(getattr(module, "__version__", "?"))


class Untrusted(Exception):
    """A value the fingerprint cannot hash with confidence."""


def value_hash(value: Any, _depth: int = 0) -> str:
    """A stable hash of a constant or parameter value.

    Raises:
        Untrusted: the value cannot be hashed reliably (not picklable).
    """
    if _depth > 50:
        raise Untrusted("value nested too deeply")
    if isinstance(value, _CONSTANT_TYPES):
        return _sha(type(value).__name__, repr(value))
    if isinstance(value, list | tuple):
        return _sha(type(value).__name__, *(value_hash(v, _depth + 1) for v in value))
    if isinstance(value, dict):
        items = sorted((value_hash(k, _depth + 1), value_hash(v, _depth + 1)) for k, v in value.items())
        return _sha("dict", *(a + b for a, b in items))
    if isinstance(value, set | frozenset):
        return _sha(type(value).__name__, *sorted(value_hash(v, _depth + 1) for v in value))
    if isinstance(value, Path):
        return _sha("path", str(value))
    try:
        return _sha(type(value).__qualname__, hashlib.sha256(pickle.dumps(value, protocol=5)).hexdigest())
    except Exception as exc:
        raise Untrusted(f"{type(value).__name__} value cannot be hashed ({exc})") from None


@dataclass(frozen=True)
class StaticPrint:
    """What a step's fingerprint is made of that is known once the flow has loaded.

    Attributes:
        code: hash of the step's normalised source.
        helpers: qualified name -> hash, for everything it references from the project.
        options: hash of its result-changing options (`foreach`, `version`, `when=`).
        untrusted: why the step cannot be fingerprinted (then it always runs), or None.
        command: hash of an external step's `Step.spec`; "" for a function step.
    """

    code: str
    helpers: dict[str, str] = field(default_factory=dict)
    options: str = ""
    untrusted: str | None = None
    command: str = ""


class _Hasher:
    """Walks a flow's code: one instance per load, memoising every object it has hashed."""

    def __init__(self, loaded: LoadedFlow) -> None:
        self.sources = {str(Path(p)): text for p, text in loaded.sources.items()}
        self.flow_module = loaded.module.__name__
        self.root = loaded.root
        self.memo: dict[int, tuple[str, dict[str, str]]] = {}
        self.keep: list[Any] = []
        self.indexes: dict[str, _SourceIndex | None] = {}
        self.nodes: dict[str, ast.AST] = {}
        self.segments: dict[types.CodeType, str | None] = {}
        """Trees of function segments this load walks (imports in a body, a local module's uses)."""

    def source_of(self, filename: str) -> _SourceIndex | None:
        if filename in self.indexes:
            return self.indexes[filename]
        text = self.sources.get(filename)
        key = filename
        if text is None:
            key = str(Path(filename).resolve())
            text = self.sources.get(key)
        index = self.indexes[filename] = _index(key, text) if text is not None else None
        return index

    def segment(self, fn: types.FunctionType) -> str | None:
        """The function's own text, cut out without parsing its file (see `function_segment`)."""
        code = fn.__code__
        if code in self.segments:
            return self.segments[code]
        index = self.source_of(code.co_filename) if code.co_name != "<lambda>" else None
        found = self.segments[code] = index.function_segment(code) if index is not None else None
        return found

    def function_node(self, fn: types.FunctionType) -> ast.AST | list[ast.Lambda] | None:
        code = fn.__code__
        index = self.source_of(code.co_filename)
        if index is None:
            return None
        if code.co_name == "<lambda>":
            return index.lambdas.get(code.co_firstlineno)
        segment = index.function_segment(code)
        if segment is not None:
            node = self.nodes.get(segment)
            if node is None:
                node = self.nodes[segment] = ast.parse(segment).body[0]
            return node
        node = index.functions.get(code.co_firstlineno)
        if node is not None and getattr(node, "name", None) == code.co_name:
            return node
        return None

    def function_source(self, fn: types.FunctionType, *, drop_decorators: bool) -> str:
        segment = self.segment(fn)
        if segment is not None:
            return normalised_text(segment, drop_decorators=drop_decorators)
        node = self.function_node(fn)
        if node is None:
            return _code_hash(fn.__code__)
        if isinstance(node, list):
            return _sha(*(ast.unparse(n) for n in node))
        index = self.source_of(fn.__code__.co_filename)
        assert index is not None
        return normalised(index, node, drop_decorators=drop_decorators)

    def is_local_file(self, filename: str) -> bool:
        return self.source_of(filename) is not None

    def module_label(self, module_name: str) -> str:
        return "flow" if module_name == self.flow_module else module_name

    def references(self, fn: types.FunctionType) -> dict[str, str]:
        """Hashes of everything `fn` uses from its globals and closure, transitively."""
        found: dict[str, str] = {}
        names = _global_names(fn.__code__)
        module_label = self.module_label(fn.__module__ or "")
        for name in sorted(names):
            if name in fn.__globals__:
                self.add(f"{module_label}.{name}", fn.__globals__[name], found, fn)
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=False):
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            self.add(f"{fn.__qualname__}.<closure {name}>", value, found, fn)
        self.add_inner_imports(fn, found)
        return found

    def add_inner_imports(self, fn: types.FunctionType, found: dict[str, str]) -> None:
        """`import helpers` inside a function body: hash the local module's file as it is on disk now.

        Such a module is imported by the worker at run time, so the parent may never have loaded it.
        """
        segment = self.segment(fn)
        if segment is not None and "import" not in segment:
            return
        node = self.function_node(fn)
        if node is None:
            return
        index = self.source_of(fn.__code__.co_filename)
        if segment is None and index is not None and not isinstance(node, list):
            if "import" not in "".join(index.lines[node.lineno - 1 : node.end_lineno]):
                return
        modules: set[str] = set()
        for root in node if isinstance(node, list) else [node]:
            for inner in ast.walk(root) if isinstance(root, ast.Lambda) else _statements(root):
                if isinstance(inner, ast.Import):
                    modules.update(alias.name for alias in inner.names)
                elif isinstance(inner, ast.ImportFrom) and inner.module and not inner.level:
                    modules.add(inner.module)
                    modules.update(f"{inner.module}.{alias.name}" for alias in inner.names)
        for module in sorted(modules):
            path = _local_module_file(self.root, module)
            if path is not None:
                try:
                    text = path.read_text(encoding="utf-8")
                except OSError as exc:
                    raise Untrusted(f"cannot read {path}: {exc}") from None
                found[f"import {module}"] = _sha("inner-import", text)
            elif "." not in module and module not in found:
                found[f"import {module}"] = _sha("module", module, _package_version(module))

    def add(self, label: str, value: Any, found: dict[str, str], user: Any) -> None:
        if label in found:
            return
        if isinstance(value, Step):
            value = value.fn
        if isinstance(value, types.FunctionType):
            if not self.is_local_file(value.__code__.co_filename):
                found[label] = _sha(
                    "external",
                    value.__module__ or "",
                    value.__qualname__,
                    _package_version(value.__module__ or ""),
                )
                return
            own, nested = self.function(value)
            found[label] = own
            for key, digest in nested.items():
                found.setdefault(key, digest)
        elif isinstance(value, type):
            self.add_class(label, value, found)
        elif isinstance(value, types.ModuleType):
            self.add_module(label, value, found, user)
        elif isinstance(value, types.BuiltinFunctionType | types.BuiltinMethodType):
            module = getattr(value, "__module__", None) or "builtins"
            found[label] = _sha("builtin", module, value.__qualname__, _package_version(module))
        else:
            found[label] = value_hash(value)
            if self.is_local_module_name(type(value).__module__):
                self.add_class(f"{label}.<class>", type(value), found)

    def is_local_module_name(self, module_name: str) -> bool:
        module = sys.modules.get(module_name)
        file = getattr(module, "__file__", None)
        return bool(file) and self.is_local_file(str(file))

    def function(self, fn: types.FunctionType) -> tuple[str, dict[str, str]]:
        cached = self.memo.get(id(fn))
        if cached is not None:
            return cached
        self.keep.append(fn)
        self.memo[id(fn)] = (_sha("recursive", fn.__qualname__), {})
        own = _sha(self.function_source(fn, drop_decorators=False), _defaults_hash(fn))
        result = (own, self.references(fn))
        self.memo[id(fn)] = result
        return result

    def add_class(self, label: str, cls: type, found: dict[str, str]) -> None:
        module = sys.modules.get(cls.__module__)
        file = getattr(module, "__file__", None)
        index = self.source_of(str(file)) if file else None
        if index is None:
            found[label] = _sha(
                "external-class", cls.__module__, cls.__qualname__, _package_version(cls.__module__)
            )
            return
        nodes = index.classes.get(cls.__name__, [])
        if not nodes:
            found[label] = _sha("class-without-source", cls.__qualname__, repr(sorted(vars(cls))))
            return
        found[label] = _sha(*(normalised(index, n, drop_decorators=False) for n in nodes))
        if id(cls) in self.memo:
            return
        self.memo[id(cls)] = (found[label], {})
        self.keep.append(cls)
        namespace = vars(module) if module is not None else {}
        used = {
            n.id
            for node in nodes
            for n in ast.walk(node)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
        }
        for name in sorted(used):
            if name in namespace and namespace[name] is not cls:
                self.add(f"{self.module_label(cls.__module__)}.{name}", namespace[name], found, cls)

    def add_module(self, label: str, module: types.ModuleType, found: dict[str, str], user: Any) -> None:
        file = getattr(module, "__file__", None)
        if not file or not self.is_local_file(str(file)):
            found[label] = _sha("module", module.__name__, _package_version(module.__name__))
            return
        attributes = _attributes_used(user, label.rpartition(".")[2], self)
        if attributes is None:
            text = self.sources.get(str(Path(file).resolve()), "")
            found[label] = _sha("whole-module", text)
            return
        found[label] = _sha("local-module", module.__name__)
        for attribute in sorted(attributes):
            if hasattr(module, attribute):
                self.add(f"{module.__name__}.{attribute}", getattr(module, attribute), found, module)


def _local_module_file(root: Path, module: str) -> Path | None:
    """The project file that `import module` would load, if it is one of the user's own."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _attributes_used(user: Any, alias: str, hasher: _Hasher) -> set[str] | None:
    """Attributes read as `alias.X` in `user`'s source; None if `alias` is used any other way."""
    if not isinstance(user, types.FunctionType):
        return None
    node = hasher.function_node(user)
    if node is None:
        return None
    nodes = node if isinstance(node, list) else [node]
    attributes: set[str] = set()
    bare = 0
    for root in nodes:
        parents: dict[int, ast.AST] = {}
        for parent in ast.walk(root):
            for child in ast.iter_child_nodes(parent):
                parents[id(child)] = parent
        for inner in ast.walk(root):
            if isinstance(inner, ast.Name) and inner.id == alias:
                parent = parents.get(id(inner))
                if isinstance(parent, ast.Attribute) and parent.value is inner:
                    attributes.add(parent.attr)
                else:
                    bare += 1
    return None if bare else attributes


def _global_names(code: types.CodeType) -> set[str]:
    """Every name the code (and code nested in it) may read as a global or an attribute.

    Attribute names come along; only those that are also globals count. A global that shadows a
    builtin (a user's own `filter`) is a global like any other.
    """
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _defaults_hash(fn: types.FunctionType) -> str:
    parts = []
    for value in list(fn.__defaults__ or ()) + list((fn.__kwdefaults__ or {}).values()):
        try:
            parts.append(value_hash(value))
        except Untrusted:
            parts.append(repr(type(value)))
    return _sha(*parts)


def _code_hash(code: types.CodeType) -> str:
    """Fallback when no source is known: the bytecode, constants and names, recursively."""
    consts = [_code_hash(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return _sha(code.co_code.hex(), *consts, *code.co_names, *code.co_varnames)


def static_prints(loaded: LoadedFlow) -> dict[str, StaticPrint]:
    """Fingerprint parts of every step in a loaded flow that do not depend on run-time values."""
    hasher = _Hasher(loaded)
    prints: dict[str, StaticPrint] = {}
    for name, node in loaded.graph.nodes.items():
        item = node.step
        try:
            if item.spec is not None:
                prints[name] = _external_print(hasher, item)
                continue
            fn = item.fn
            if not isinstance(fn, types.FunctionType):
                raise Untrusted(f"the step is a {type(fn).__name__}, not a function")
            code = _sha(hasher.function_source(fn, drop_decorators=True))
            helpers = hasher.references(fn)
            option_parts = [repr(item.foreach), repr(item.version)]
            if item.when is not None:
                if isinstance(item.when, types.FunctionType):
                    option_parts.append(hasher.function_source(item.when, drop_decorators=False))
                    for key, digest in hasher.references(item.when).items():
                        helpers.setdefault(key, digest)
                else:
                    option_parts.append(value_hash(item.when))
            prints[name] = StaticPrint(code=code, helpers=helpers, options=_sha(*option_parts))
        except Untrusted as exc:
            prints[name] = StaticPrint(code="", untrusted=str(exc))
        except RecursionError:
            prints[name] = StaticPrint(code="", untrusted="its helpers nest too deeply to hash")
    return prints


def _external_print(hasher: _Hasher, item: Step) -> StaticPrint:
    """A command, container or `uses:` step: its spec is hashed as `command`; the function a `uses:`
    step calls counts as a function step's code and helpers."""
    command = _sha("command", value_hash(item.spec))
    function = getattr(item.fn, "function", None)
    if not isinstance(function, types.FunctionType):
        return StaticPrint(code=command, options=_sha(repr(item.version)), command=command)
    return StaticPrint(
        code=_sha(hasher.function_source(function, drop_decorators=True)),
        helpers=hasher.references(function),
        options=_sha(repr(item.version)),
        command=command,
    )


def combine(
    static: StaticPrint,
    params: dict[str, str],
    inputs: dict[str, str],
    item: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """The full fingerprint and its parts (stored so a later run can say what changed)."""
    detail: dict[str, Any] = {
        "code": static.code,
        "helpers": static.helpers,
        "options": static.options,
        "params": params,
        "inputs": inputs,
    }
    if item is not None:
        detail["item"] = item
    parts = [static.code, static.options, item or ""]
    if static.command:
        detail["command"] = static.command
        parts.append(f"c:{static.command}")
    parts += [f"h:{k}={v}" for k, v in sorted(static.helpers.items())]
    parts += [f"p:{k}={v}" for k, v in sorted(params.items())]
    parts += [f"i:{k}={v}" for k, v in sorted(inputs.items())]
    return _sha(*parts), detail


def explain(previous: dict[str, Any] | None, current: dict[str, Any]) -> str:
    """Why a step runs, comparing its fingerprint parts with those of its last execution."""
    if previous is None:
        return "no earlier result"
    if previous.get("command", "") != current.get("command", ""):
        return "command changed"
    if previous.get("code") != current["code"]:
        return "code changed"
    old_helpers, new_helpers = previous.get("helpers", {}), current["helpers"]
    changed = sorted(
        k for k in set(old_helpers) | set(new_helpers) if old_helpers.get(k) != new_helpers.get(k)
    )
    if changed:
        names = ", ".join(k.removeprefix("flow.") for k in changed[:3])
        return f"helper changed: {names}" + (" …" if len(changed) > 3 else "")
    if previous.get("options") != current["options"]:
        return "options changed (when/foreach/version)"
    old_params, new_params = previous.get("params", {}), current["params"]
    changed = sorted(k for k in set(old_params) | set(new_params) if old_params.get(k) != new_params.get(k))
    if changed:
        return f"parameter changed: {', '.join(changed)}"
    old_inputs, new_inputs = previous.get("inputs", {}), current["inputs"]
    changed = sorted(k for k in set(old_inputs) | set(new_inputs) if old_inputs.get(k) != new_inputs.get(k))
    if changed:
        return f"upstream output changed: {', '.join(changed)}"
    if previous.get("item") != current.get("item"):
        return "fan-out item changed"
    return "no cached result (its last execution failed or was stopped)"
