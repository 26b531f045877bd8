"""Provides fingerprints: what decides whether a stored result may be reused.

A step's fingerprint hashes, separately so that `flow show` can say *why* a step ran:

- `code`: its normalised source (parsed and unparsed: comments, formatting and docstrings do not count;
  decorators do not either, their result-changing options are hashed under `options`);
- `helpers`: everything of the user's it can reach, transitively, by qualified name: functions, classes,
  modules and constants it reads as globals (attribute names do not count: `text.split` does not make a
  step named `split` a helper), and the code hidden in values (`_Hasher.digest`: wrapped functions,
  partials, bound methods, functions in containers, closures by what they captured, dicts in order),
  and `import X` for each module imported in a function body (its whole import closure, `runner.imports`).
  "The user's" is decided by `dsl.locality` (not installed, not the standard library); installed code
  counts by its distribution's version;
- `options`: `foreach`, `version` and the `when=` predicate;
- `command`: for an external step (`dsl.external`), its `Step.spec`: argv and env templates, image and
  digest, declared outputs, connection variables (a secret's value is never part of it);
- `params`: the values of the flow parameters it reads;
- `inputs`: the content hash of each upstream output (early cut-off: an upstream that re-runs and
  returns the same bytes does not invalidate its descendants);
- `declared`: its declared input files and environment variables (`runner.declared`).

Source comes from the text the loader read and compiled, never from `linecache` or `inspect`, which can
be stale right after an edit. When something cannot be hashed with confidence (a module imported by a
computed name, a compiled extension of the user's, an unpicklable global) the step is marked untrusted
and always runs: never a stale result.
"""

from __future__ import annotations

import ast
import dis
import functools
import hashlib
import inspect
import io
import pickle
import sys
import textwrap
import types
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsl.loader import LoadedFlow
from dsl.locality import is_user_file, version_of
from dsl.step import Step
from runner.imports import CannotSee, ImportScanner, imports_in

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


class Untrusted(Exception):
    """A value the fingerprint cannot hash with confidence."""


def value_hash(value: Any, _depth: int = 0) -> str:
    """A stable hash of a constant or parameter value.

    Dicts are hashed in their order (Python dicts are ordered: `list(d)` and `",".join(d)` change when
    keys are reordered); sets, whose order means nothing, are hashed sorted.

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
        return _sha(
            _container_name(value, "dict"),
            *(value_hash(k, _depth + 1) + value_hash(v, _depth + 1) for k, v in value.items()),
        )
    if isinstance(value, set | frozenset):
        return _sha(type(value).__name__, *sorted(value_hash(v, _depth + 1) for v in value))
    if isinstance(value, Path):
        return _sha("path", str(value))
    try:
        return _sha(type(value).__qualname__, hashlib.sha256(pickle.dumps(value, protocol=5)).hexdigest())
    except Exception as exc:
        raise Untrusted(f"{type(value).__name__} value cannot be hashed ({exc})") from None


def _container_name(value: Any, base: str) -> str:
    """`dict` for a plain dict, else the subclass's qualified name (a `defaultdict` and a `dict` with
    equal items behave differently, so they are different values)."""
    kind = type(value)
    return (
        base
        if kind.__name__ == base and kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


@dataclass(frozen=True)
class StaticPrint:
    """What a step's fingerprint is made of that is known once the flow has loaded.

    Attributes:
        code: hash of the step's normalised source.
        helpers: qualified name -> hash, for everything it references from the project.
        options: hash of its result-changing options (`foreach`, `version`, `when=`).
        untrusted: why the step cannot be fingerprinted (then it always runs), or None.
        command: hash of an external step's `Step.spec`; "" for a function step.
        files: absolute path -> SHA-256 of the text, for each of the user's modules the step imports
            at run time (inside a function body), as read at planning: the worker checks it executed
            exactly these texts (`runner.freshness`), and `--watch` reloads when one is saved.
    """

    code: str
    helpers: dict[str, str] = field(default_factory=dict)
    options: str = ""
    untrusted: str | None = None
    command: str = ""
    files: dict[str, str] = field(default_factory=dict)


_CODE_OBJECTS = (
    types.FunctionType,
    types.MethodType,
    types.ModuleType,
    types.BuiltinFunctionType,
    functools.partial,
    functools._lru_cache_wrapper,
    staticmethod,
    classmethod,
    property,
)
"""Objects a value may hold that are code, not data: hashed by what they run, not by name."""


class _DigestPickler(pickle.Pickler):
    """Pickles an arbitrary value to hash it, with every piece of code inside it (functions, methods,
    modules, the user's classes) replaced by its fingerprint: an object holding a local function
    (`FunctionTransformer(func=clean)`, a registry instance) changes when that function's code does."""

    def __init__(
        self, file: io.BytesIO, hasher: _Hasher, found: dict[str, str], depth: int, root: Any
    ) -> None:
        super().__init__(file, protocol=5)
        self._hasher = hasher
        self._found = found
        self._depth = depth
        self._root = root

    def persistent_id(self, obj: Any) -> str | None:
        if obj is self._root:
            return None
        if isinstance(obj, _CODE_OBJECTS) or isinstance(obj, Step):
            return self._hasher.digest(obj, self._found, self._depth + 1)
        if isinstance(obj, type) and self._hasher.is_user_class(obj):
            return self._hasher.digest(obj, self._found, self._depth + 1)
        return None


_FILE_MARK = "\0file:"
"""Marks, among a step's helpers while they are gathered, a file its imports reach
(see `StaticPrint.files`)."""

_SKIPPED_CLASS_ATTRIBUTES = frozenset({"__dict__", "__weakref__", "__module__", "__doc__", "__qualname__"})


class _Hasher:
    """Walks a flow's code: one instance per load, memoising every object it has hashed."""

    def __init__(self, loaded: LoadedFlow) -> None:
        self.sources = {str(Path(p)): text for p, text in loaded.sources.items()}
        self.flow_module = loaded.module.__name__
        self.root = loaded.root
        self.memo: dict[int, tuple[str, dict[str, str]] | Untrusted] = {}
        self.keep: list[Any] = []
        self.indexes: dict[str, _SourceIndex | None] = {}
        self.nodes: dict[str, ast.AST] = {}
        self.segments: dict[types.CodeType, str | None] = {}
        """Trees of function segments this load walks (imports in a body, a local module's uses)."""
        self.imports = ImportScanner([str(loaded.root), *loaded.search_paths, *sys.path])
        self.files_seen = False
        """Whether any step's helpers carry `_FILE_MARK` entries (most flows: none to filter out)."""
        self.installed_modules: dict[str, str] = {}

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
        """The file's text is known from the load (the flow file and the modules it imported)."""
        return self.source_of(filename) is not None

    def is_user_code_file(self, filename: str) -> bool:
        """The user's own code: known from the load, or neither installed nor the standard library
        (a module imported before the flow loaded: hashed by its compiled code)."""
        return self.is_local_file(filename) or is_user_file(filename)

    def is_user_class(self, cls: type) -> bool:
        if cls.__module__ == self.flow_module:
            return True
        file = getattr(sys.modules.get(cls.__module__), "__file__", None)
        return bool(file) and self.is_user_code_file(str(file))

    def module_label(self, module_name: str) -> str:
        return "flow" if module_name == self.flow_module else module_name

    # ----- what a function references -------------------------------------------------------

    def references(self, fn: types.FunctionType) -> dict[str, str]:
        """Hashes of everything `fn` uses from its globals (transitively) and imports in its body.

        Only names the bytecode really reads as globals count: `df.split(...)` does not make a step
        named `split` a helper.
        """
        found: dict[str, str] = {}
        namespace = fn.__globals__
        candidates = _names(fn.__code__) & namespace.keys()  # most names are locals, attributes, builtins
        if candidates:
            module_label = self.module_label(namespace.get("__name__") or fn.__module__ or "")
            for name in sorted(_global_names(fn.__code__, candidates)):
                self.add(f"{module_label}.{name}", namespace[name], found, fn)
        self.add_inner_imports(fn, found)
        return found

    def closure_values(self, fn: types.FunctionType, found: dict[str, str]) -> list[str]:
        """`name=hash` for each value the function captured (a closure is keyed by what it holds:
        `make_scaler(2)` and `make_scaler(3)` share their code, not their fingerprint)."""
        parts = []
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=False):
            try:
                value = cell.cell_contents
            except ValueError:
                parts.append(f"{name}=<unbound>")
                continue
            parts.append(f"{name}={self.digest(value, found)}")
        return parts

    def add_inner_imports(self, fn: types.FunctionType, found: dict[str, str]) -> None:
        """Imports inside a function body run in the worker: hash the whole import closure of each
        (see `runner.imports`), as the files are on disk now."""
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
        nodes = node if isinstance(node, list) else [node]
        self.add_imports(nodes, str(fn.__globals__.get("__package__") or ""), f"{fn.__qualname__}()", found)

    def add_imports(self, nodes: list[Any], package: str, where: str, found: dict[str, str]) -> None:
        """`import X` -> the hash of X's import closure, for every module the code imports."""
        modules: set[str] = set()
        try:
            for root in nodes:
                modules.update(imports_in(root, package, where))
            for module in sorted(modules):
                closure = self.imports.closure(module)
                found[f"import {module}"] = closure.digest
                found.update({_FILE_MARK + path: sha for path, sha in closure.files.items()})
                self.files_seen = self.files_seen or bool(closure.files)
        except CannotSee as exc:
            raise Untrusted(str(exc)) from None

    def add(self, label: str, value: Any, found: dict[str, str], user: Any) -> None:
        if label in found:
            return
        if isinstance(value, types.ModuleType):
            self.add_module(label, value, found, user)
        else:
            found[label] = self.digest(value, found)

    # ----- hashing any value ----------------------------------------------------------------

    def digest(self, value: Any, found: dict[str, str], depth: int = 0) -> str:
        """The fingerprint of any value a step can reach; what it references lands in `found`.

        Code is hashed by what it runs, wherever it hides: wrapped functions (`lru_cache`,
        `contextmanager`, `singledispatch`, any `functools.wraps` decorator), `partial`s with their
        arguments, bound methods with their object, functions held in lists and dicts, classes and
        their methods, and objects holding any of these.
        """
        if depth > 50:
            raise Untrusted("value nested too deeply")
        if isinstance(value, _CONSTANT_TYPES) or isinstance(value, Path):
            return value_hash(value)
        if isinstance(value, Step):
            value = value.fn
        if isinstance(value, types.FunctionType):
            return self._merge(self.function(value), found)
        if isinstance(value, type):
            return self._merge(self.class_(value), found)
        if isinstance(value, types.ModuleType):
            return self.module_digest(value, found)
        deeper = depth + 1
        if isinstance(value, types.MethodType):
            return _sha(
                "method",
                self.digest(value.__func__, found, deeper),
                self.digest(value.__self__, found, deeper),
            )
        if isinstance(value, functools.partial):
            return _sha(
                "partial",
                self.digest(value.func, found, deeper),
                self.digest(value.args, found, deeper),
                self.digest(value.keywords, found, deeper),
            )
        if isinstance(value, functools._lru_cache_wrapper):
            return _sha(
                "lru_cache", repr(value.cache_parameters()), self.digest(value.__wrapped__, found, deeper)
            )
        if isinstance(value, staticmethod | classmethod):
            return _sha(type(value).__name__, self.digest(value.__func__, found, deeper))
        if isinstance(value, property):
            return _sha(
                "property", *(self.digest(f, found, deeper) for f in (value.fget, value.fset, value.fdel))
            )
        if isinstance(value, list | tuple):
            return _sha(type(value).__name__, *(self.digest(v, found, deeper) for v in value))
        if isinstance(value, dict):
            return _sha(
                _container_name(value, "dict"),
                *(self.digest(k, found, deeper) + self.digest(v, found, deeper) for k, v in value.items()),
            )
        if isinstance(value, set | frozenset):
            return _sha(type(value).__name__, *sorted(self.digest(v, found, deeper) for v in value))
        if isinstance(value, types.BuiltinFunctionType | types.BuiltinMethodType):
            return self.builtin_digest(value, found, deeper)
        return self.object_digest(value, found, depth)

    @staticmethod
    def _merge(result: tuple[str, dict[str, str]], found: dict[str, str]) -> str:
        own, nested = result
        for key, digest in nested.items():
            found.setdefault(key, digest)
        return own

    def builtin_digest(self, value: Any, found: dict[str, str], depth: int) -> str:
        module_name = getattr(value, "__module__", None) or "builtins"
        module = sys.modules.get(module_name)
        file = str(getattr(module, "__file__", None) or "")
        if file and is_user_file(file) and not file.endswith(".py"):
            raise Untrusted(
                f"it uses {module_name}, a compiled extension module of yours (its code cannot be hashed)"
            )
        base = _sha("builtin", module_name, value.__qualname__, version_of(file, module_name))
        owner = getattr(value, "__self__", None)
        if owner is None or isinstance(owner, types.ModuleType):
            return base
        return _sha(base, self.digest(owner, found, depth))

    def object_digest(self, value: Any, found: dict[str, str], depth: int) -> str:
        """Any other object: pickled with the code inside it replaced by its fingerprint."""
        buffer = io.BytesIO()
        try:
            _DigestPickler(buffer, self, found, depth, value).dump(value)
        except Untrusted:
            raise
        except RecursionError:
            raise Untrusted(f"a {type(value).__name__} value nests too deeply to hash") from None
        except Exception as exc:
            raise Untrusted(f"{type(value).__name__} value cannot be hashed ({exc})") from None
        kind = type(value)
        cls = self.digest(kind, found, depth + 1) if self.is_user_class(kind) else kind.__qualname__
        return _sha("object", cls, hashlib.sha256(buffer.getvalue()).hexdigest())

    # ----- functions, classes, modules --------------------------------------------------------

    def _memoised(self, obj: Any, placeholder: str, compute: Any) -> tuple[str, dict[str, str]]:
        cached = self.memo.get(id(obj))
        if isinstance(cached, Untrusted):
            raise cached
        if cached is not None:
            return cached
        self.keep.append(obj)
        self.memo[id(obj)] = (placeholder, {})
        try:
            result: tuple[str, dict[str, str]] = compute(obj)
        except Untrusted as exc:
            self.memo[id(obj)] = exc
            raise
        self.memo[id(obj)] = result
        return result

    def function(self, fn: types.FunctionType) -> tuple[str, dict[str, str]]:
        """(own hash, what it references) of a function: its source, defaults and captured values."""
        return self._memoised(fn, _sha("recursive", fn.__qualname__), self._function)

    def _function(self, fn: types.FunctionType) -> tuple[str, dict[str, str]]:
        code = fn.__code__
        nested: dict[str, str] = {}
        if not self.is_user_code_file(code.co_filename):
            return self._external_function(fn, nested), nested
        source = (
            self.function_source(fn, drop_decorators=False)
            if self.is_local_file(code.co_filename)
            else _code_hash(code)
        )
        own = _sha(source, self.defaults_digest(fn, nested), *self.closure_values(fn, nested))
        for key, digest in self.references(fn).items():
            nested.setdefault(key, digest)
        return own, nested

    def _external_function(self, fn: types.FunctionType, nested: dict[str, str]) -> str:
        """An installed or standard-library function: its identity and version, plus the user's code
        it wraps (`__wrapped__`, a `singledispatch` registry, a decorator's captured function)."""
        code = fn.__code__
        parts = [
            "external",
            code.co_qualname,
            Path(code.co_filename).name,
            version_of(code.co_filename, fn.__module__ or ""),
        ]
        attributes = getattr(fn, "__dict__", {})
        if "__wrapped__" in attributes:
            parts.append(self.digest(attributes["__wrapped__"], nested))
        registry = attributes.get("registry")
        if registry is not None and hasattr(registry, "items"):
            parts.append(self.digest(dict(registry.items()), nested))
        for cell in fn.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            if self.is_user_code(value):
                parts.append(self.digest(value, nested))
        return _sha(*parts)

    def is_user_code(self, value: Any) -> bool:
        """A captured value worth following out of an installed wrapper: the user's code."""
        if isinstance(value, Step):
            return True
        if isinstance(value, types.FunctionType):
            return self.is_user_code_file(value.__code__.co_filename)
        if isinstance(value, type):
            return self.is_user_class(value)
        return isinstance(value, types.MethodType | functools.partial | functools._lru_cache_wrapper)

    def defaults_digest(self, fn: types.FunctionType, found: dict[str, str]) -> str:
        parts = []
        for value in list(fn.__defaults__ or ()) + list((fn.__kwdefaults__ or {}).values()):
            try:
                parts.append(self.digest(value, found))
            except Untrusted:
                parts.append(repr(type(value)))  # its expression is in the source already
        return _sha(*parts)

    def class_(self, cls: type) -> tuple[str, dict[str, str]]:
        """(own hash, what it references) of a class: its source, or (defined without source) its
        members; an installed class counts by its distribution's version."""
        return self._memoised(cls, _sha("recursive-class", cls.__qualname__), self._class)

    def _class(self, cls: type) -> tuple[str, dict[str, str]]:
        nested: dict[str, str] = {}
        module = sys.modules.get(cls.__module__)
        file = str(getattr(module, "__file__", None) or "")
        if not self.is_user_class(cls):
            return _sha(
                "external-class", cls.__module__, cls.__qualname__, version_of(file, cls.__module__)
            ), nested
        index = self.source_of(file) if file else None
        nodes = index.classes.get(cls.__name__, []) if index is not None else []
        if index is None or not nodes:
            return self._class_members(cls, nested), nested
        own_text = "\n".join(normalised(index, n, drop_decorators=False) for n in nodes)
        own = _sha(own_text, *self._assigned_members(cls, nested))
        namespace = vars(module) if module is not None else {}
        used = {
            n.id
            for node in nodes
            for n in ast.walk(node)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
        }
        for name in sorted(used):
            if name in namespace and namespace[name] is not cls:
                self.add(f"{self.module_label(cls.__module__)}.{name}", namespace[name], nested, cls)
        if "import" in own_text:
            self.add_imports(nodes, str(namespace.get("__package__") or ""), cls.__qualname__, nested)
        return own, nested

    def _assigned_members(self, cls: type, found: dict[str, str]) -> list[str]:
        """Members whose value the class body's source may not show: data attributes (set or changed
        after the class was made: `Config.threshold = 5`) and functions defined elsewhere and attached
        (`Model.predict = fast_predict`). An unhashable data attribute counts by its type."""
        parts = []
        inside = cls.__qualname__ + "."
        for name, member in vars(cls).items():
            if name.startswith("__") and name.endswith("__"):
                continue
            code = getattr(getattr(member, "__func__", member), "__qualname__", "")
            if isinstance(member, _CODE_OBJECTS) and code.startswith(inside):
                continue  # defined in the class body: its source is hashed already
            try:
                parts.append(f"{name}={self.digest(member, found)}")
            except Untrusted:
                parts.append(f"{name}:{type(member).__qualname__}")
        return parts

    def _class_members(self, cls: type, found: dict[str, str]) -> str:
        """A class whose source is not known (made by `type()`, or from a module imported before the
        flow loaded): its bases and every member, code hashed by what it runs."""
        parts = ["class", cls.__qualname__]
        parts += [self.digest(base, found) for base in cls.__bases__ if base is not object]
        for name, member in vars(cls).items():
            if name in _SKIPPED_CLASS_ATTRIBUTES or isinstance(
                member, types.GetSetDescriptorType | types.MemberDescriptorType
            ):
                continue
            parts.append(f"{name}={self.digest(member, found)}")
        return _sha(*parts)

    def add_module(self, label: str, module: types.ModuleType, found: dict[str, str], user: Any) -> None:
        file = str(getattr(module, "__file__", None) or "")
        if not file or not self.is_user_code_file(file):
            found[label] = self.module_digest(module, found)
            return
        attributes = _attributes_used(user, label.rpartition(".")[2], self)
        if attributes is None:
            found[label] = self.module_digest(module, found)
            return
        found[label] = _sha("local-module", module.__name__)
        for attribute in sorted(attributes):
            if hasattr(module, attribute):
                self.add(f"{module.__name__}.{attribute}", getattr(module, attribute), found, module)

    def module_digest(self, module: types.ModuleType, found: dict[str, str]) -> str:
        """A whole module: installed ones by version; the user's by its text and import closure."""
        file = str(getattr(module, "__file__", None) or "")
        name = module.__name__
        if not file or not self.is_user_code_file(file):
            known = self.installed_modules.get(name)
            if known is None:
                known = self.installed_modules[name] = _sha("module", name, version_of(file, name))
            return known
        if not file.endswith(".py"):
            raise Untrusted(
                f"it uses {name}, a compiled extension module of yours (its code cannot be hashed)"
            )
        text = self.sources.get(str(Path(file).resolve()))
        if name == self.flow_module:
            return _sha("whole-module", text or "")
        try:
            closure = self.imports.closure(name)
        except CannotSee as exc:
            raise Untrusted(str(exc)) from None
        found.update({_FILE_MARK + path: sha for path, sha in closure.files.items()})
        self.files_seen = self.files_seen or bool(closure.files)
        return _sha("whole-module", text or "", closure.digest)


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


_LOAD_GLOBAL = dis.opmap["LOAD_GLOBAL"]
_GLOBAL_OPS = frozenset(dis.opmap[name] for name in ("LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL"))
_NAME_OPS = frozenset(
    dis.opmap[name] for name in ("LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS") if name in dis.opmap
)
"""A class body (unoptimised code) reads globals by name."""
_EXTENDED_ARG = dis.opmap["EXTENDED_ARG"]
_GLOBAL_SHIFT = 1 if sys.version_info >= (3, 11) else 0


def _names(code: types.CodeType) -> set[str]:
    """Every name in `co_names` of the code and the code nested in it: globals and attribute names
    alike (a cheap superset of `_global_names`)."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _global_names(code: types.CodeType, candidates: set[str]) -> set[str]:
    """Those of `candidates` the code (or code nested in it) reads, writes or deletes as a global.

    Read from the bytecode's global instructions, not `co_names` (which also lists every attribute
    name: `text.split` would count a global named `split`). A global that shadows a builtin (a user's
    own `filter`) is a global like any other. Each candidate's instructions are searched for as bytes
    (a reload re-checks every step of a big flow); code with too many names for one-byte arguments
    is scanned instruction by instruction.
    """
    names = code.co_names
    by_name = not code.co_flags & inspect.CO_OPTIMIZED
    found: set[str] = set()
    if len(names) >= 128:
        found = _scan_globals(code, by_name) & candidates
    else:
        raw = code.co_code
        for name in candidates:
            if name not in names:
                continue
            index = names.index(name)
            if any(_at_instruction(raw, bytes(pattern)) for pattern in _instructions(index, by_name)):
                found.add(name)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= _global_names(const, candidates)
    return found


def _instructions(index: int, by_name: bool) -> Iterator[tuple[int, int]]:
    """(opcode, argument) of each instruction that uses name `index` as a global, commonest first."""
    yield _LOAD_GLOBAL, index << _GLOBAL_SHIFT
    yield _LOAD_GLOBAL, index << _GLOBAL_SHIFT | 1
    for op in _GLOBAL_OPS - {_LOAD_GLOBAL}:
        yield op, index
    if by_name:
        for op in _NAME_OPS:
            yield op, index


def _at_instruction(raw: bytes, pattern: bytes) -> bool:
    """Whether `pattern` (an opcode and its argument) occurs at an instruction boundary of `raw`."""
    start = raw.find(pattern)
    while start != -1:
        if start % 2 == 0:
            return True
        start = raw.find(pattern, start + 1)
    return False


def _scan_globals(code: types.CodeType, by_name: bool) -> set[str]:
    """Every name one code object's instructions use as a global (arguments of any size)."""
    names = code.co_names
    raw = code.co_code
    found = set()
    extended = 0
    for offset in range(0, len(raw), 2):
        op = raw[offset]
        if op == _EXTENDED_ARG:
            extended = (extended | raw[offset + 1]) << 8
            continue
        arg = extended | raw[offset + 1]
        extended = 0
        if op in _GLOBAL_OPS:
            found.add(names[arg >> _GLOBAL_SHIFT if op == _LOAD_GLOBAL else arg])
        elif by_name and op in _NAME_OPS:
            found.add(names[arg])
    return found


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
            closure = hasher.closure_values(fn, helpers)
            if closure:
                helpers[f"{name}.<closure>"] = _sha(*closure)
            option_parts = [repr(item.foreach), repr(item.version)]
            if item.when is not None:
                if isinstance(item.when, types.FunctionType):
                    option_parts.append(hasher.function_source(item.when, drop_decorators=False))
                    option_parts += hasher.closure_values(item.when, helpers)
                    for key, digest in hasher.references(item.when).items():
                        helpers.setdefault(key, digest)
                else:
                    option_parts.append(hasher.digest(item.when, helpers))
            helpers, files = _split_files(hasher, helpers)
            prints[name] = StaticPrint(code=code, helpers=helpers, options=_sha(*option_parts), files=files)
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
    helpers, files = _split_files(hasher, hasher.references(function))
    return StaticPrint(
        code=_sha(hasher.function_source(function, drop_decorators=True)),
        helpers=helpers,
        options=_sha(repr(item.version)),
        command=command,
        files=files,
    )


def _split_files(hasher: _Hasher, helpers: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The helpers proper, and the files of modules imported at run time marked among them."""
    if not hasher.files_seen:
        return helpers, {}
    files = {k.removeprefix(_FILE_MARK): v for k, v in helpers.items() if k.startswith(_FILE_MARK)}
    return {k: v for k, v in helpers.items() if not k.startswith(_FILE_MARK)}, files


def combine(
    static: StaticPrint,
    params: dict[str, str],
    inputs: dict[str, str],
    item: str | None = None,
    declared: dict[str, str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The full fingerprint and its parts (stored so a later run can say what changed).

    `declared`: the step's declared input files and environment variables (`runner.declared`).
    """
    detail: dict[str, Any] = {
        "code": static.code,
        "helpers": static.helpers,
        "options": static.options,
        "params": params,
        "inputs": inputs,
    }
    if item is not None:
        detail["item"] = item
    if declared:
        detail["declared"] = declared
    parts = [static.code, static.options, item or ""]
    if static.command:
        detail["command"] = static.command
        parts.append(f"c:{static.command}")
    parts += [f"h:{k}={v}" for k, v in sorted(static.helpers.items())]
    parts += [f"p:{k}={v}" for k, v in sorted(params.items())]
    parts += [f"i:{k}={v}" for k, v in sorted(inputs.items())]
    if declared:
        parts += [f"d:{k}={v}" for k, v in sorted(declared.items())]
    return _sha(*parts), detail


def _changed(old: dict[str, str], new: dict[str, str]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def _listed(names: list[str]) -> str:
    return ", ".join(names[:3]) + (" …" if len(names) > 3 else "")


def explain(previous: dict[str, Any] | None, current: dict[str, Any]) -> str:
    """Why a step runs, comparing its fingerprint parts with those of its previous run."""
    if previous is None:
        return "no earlier result"
    if previous.get("command", "") != current.get("command", ""):
        return "command changed"
    if previous.get("code") != current["code"]:
        return "code changed"
    changed = _changed(previous.get("helpers", {}), current["helpers"])
    imported = [k.removeprefix("import ") for k in changed if k.startswith("import ")]
    helpers = [k.removeprefix("flow.") for k in changed if not k.startswith("import ")]
    if helpers:
        return f"helper changed: {_listed(helpers)}"
    if imported:
        return f"imported module changed: {_listed(imported)}"
    if previous.get("options") != current["options"]:
        return "options changed (when/foreach/version)"
    changed = _changed(previous.get("declared", {}), current.get("declared", {}))
    files = [k.partition(":")[2] for k in changed if not k.startswith("env:")]
    variables = [k.removeprefix("env:") for k in changed if k.startswith("env:")]
    if files:
        return f"input file changed: {_listed(files)}"
    if variables:
        return f"environment changed: {_listed(variables)}"
    changed = _changed(previous.get("params", {}), current["params"])
    if changed:
        return f"parameter changed: {', '.join(changed)}"
    changed = _changed(previous.get("inputs", {}), current["inputs"])
    if changed:
        return f"upstream output changed: {', '.join(changed)}"
    if previous.get("item") != current.get("item"):
        return "fan-out item changed"
    return "no cached result (its last execution failed or was stopped)"
