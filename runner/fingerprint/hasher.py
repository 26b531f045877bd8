"""Provides `Hasher`, the reference closure: everything of the user's a step can reach (functions,
classes, modules, constants, the code hidden in values), hashed by what it runs.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

from dsl.loader import LoadedFlow
from dsl.locality import is_user_file, version_of
from dsl.step import Step
from runner.fingerprint.bytecode import code_hash, global_reads
from runner.fingerprint.imports import CannotSee, ImportScanner, imports_in
from runner.fingerprint.pickler import CODE_OBJECTS, DigestPickler
from runner.fingerprint.source import SourceIndex, index_source, normalised, normalised_text
from runner.fingerprint.values import CONSTANT_TYPES, Untrusted, container_name, sha, value_hash

FILE_MARK = "\0file:"
"""Marks, among a step's helpers while they are gathered, a file its imports reach
(see `StaticPrint.files`)."""

SHOWN_CONSTANT_CHARS = 10_000
"""A constant helper's repr is kept (for a diff) up to this many characters."""

_SKIPPED_CLASS_ATTRIBUTES = frozenset({"__dict__", "__weakref__", "__module__", "__doc__", "__qualname__"})


class Hasher:
    """Walks a flow's code: one instance per load, memoising every object it has hashed.

    Longer than the ~300 lines a class should be, for a reason: it is one recursive walk over the
    user's code (a function's references, a value's code, a class's members, a module's closure lead
    into one another) sharing one memo and one set of found helpers; split into parts, each part
    would take the hasher back to recurse, which makes nothing independent.
    """

    def __init__(self, loaded: LoadedFlow) -> None:
        self.sources = {str(Path(p)): text for p, text in loaded.sources.items()}
        self.flow_module = loaded.module.__name__
        self.root = loaded.root
        self.memo: dict[int, tuple[str, dict[str, str]] | Untrusted] = {}
        self.keep: list[Any] = []
        self.indexes: dict[str, SourceIndex | None] = {}
        self.nodes: dict[str, ast.stmt] = {}
        self.segments: dict[types.CodeType, str | None] = {}
        """Trees of function segments this load walks (imports in a body, a local module's uses)."""
        self.imports = ImportScanner([str(loaded.root), *loaded.search_paths, *sys.path])
        self.files_seen = False
        """Whether any step's helpers carry `FILE_MARK` entries (most flows: none to filter out)."""
        self.installed_modules: dict[str, str] = {}
        self.texts: dict[int, str] = {}
        """`id()` of each function and class hashed from its source -> that normalised source (the
        objects stay alive in `keep`)."""
        self.part_texts: dict[str, str] = {}
        """A helper's hash -> the text it was computed from (source, or a constant's repr): what
        `flow plan --diff` and `flow diff` show of a changed helper (see `StaticPrint.texts`)."""

    def source_of(self, filename: str) -> SourceIndex | None:
        if filename in self.indexes:
            return self.indexes[filename]
        text = self.sources.get(filename)
        key = filename
        if text is None:
            key = str(Path(filename).resolve())
            text = self.sources.get(key)
        index = self.indexes[filename] = index_source(key, text) if text is not None else None
        return index

    def segment(self, fn: types.FunctionType) -> str | None:
        """The function's own text, cut out without parsing its file (see `function_segment`)."""
        code = fn.__code__
        if code in self.segments:
            return self.segments[code]
        index = self.source_of(code.co_filename) if code.co_name != "<lambda>" else None
        found = self.segments[code] = index.function_segment(code) if index is not None else None
        return found

    def function_node(self, fn: types.FunctionType) -> ast.stmt | list[ast.Lambda] | None:
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
        text = self.function_text(fn, drop_decorators=drop_decorators)
        if text is not None:
            return text
        node = self.function_node(fn)
        if isinstance(node, list):
            return sha(*(ast.unparse(n) for n in node))
        return code_hash(fn.__code__)

    def function_text(self, fn: types.FunctionType, *, drop_decorators: bool) -> str | None:
        """The function's normalised source, or None where only a hash of it is known (a lambda,
        code without source)."""
        segment = self.segment(fn)
        if segment is not None:
            return normalised_text(segment, drop_decorators=drop_decorators)
        node = self.function_node(fn)
        if node is None or isinstance(node, list):
            return None
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

    def references(self, fn: types.FunctionType, *, body_imports: bool = True) -> dict[str, str]:
        """Hashes of everything `fn` uses from its globals (transitively) and imports in its body
        (`body_imports=False`: the caller knows its body imports nothing).

        Only names the bytecode really reads as globals count: `df.split(...)` does not make a step
        named `split` a helper.
        """
        found: dict[str, str] = {}
        namespace = fn.__globals__
        used = global_reads(fn.__code__) & namespace.keys()  # a global not defined is a builtin
        if used:
            module_label = self.module_label(namespace.get("__name__") or fn.__module__ or "")
            for name in sorted(used):
                self.add(f"{module_label}.{name}", namespace[name], found, fn)
        if body_imports:
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
        (see `runner.fingerprint.imports`), as the files are on disk now."""
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
                found.update({FILE_MARK + path: sha for path, sha in closure.files.items()})
                self.files_seen = self.files_seen or bool(closure.files)
        except CannotSee as exc:
            raise Untrusted(str(exc)) from None

    def add(self, label: str, value: Any, found: dict[str, str], user: Any) -> None:
        if label in found:
            return
        if isinstance(value, types.ModuleType):
            self.add_module(label, value, found, user)
            return
        digest = found[label] = self.digest(value, found)
        text = self.texts.get(id(value.fn if isinstance(value, Step) else value))
        if text is None and isinstance(value, CONSTANT_TYPES):
            text = f"{label.rpartition('.')[2]} = {value!r}"[:SHOWN_CONSTANT_CHARS]
        if text is not None:
            self.part_texts[digest] = text

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
        if isinstance(value, CONSTANT_TYPES) or isinstance(value, Path):
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
            return sha(
                "method",
                self.digest(value.__func__, found, deeper),
                self.digest(value.__self__, found, deeper),
            )
        if isinstance(value, functools.partial):
            return sha(
                "partial",
                self.digest(value.func, found, deeper),
                self.digest(value.args, found, deeper),
                self.digest(value.keywords, found, deeper),
            )
        if isinstance(value, functools._lru_cache_wrapper):
            return sha(
                "lru_cache", repr(value.cache_parameters()), self.digest(value.__wrapped__, found, deeper)
            )
        if isinstance(value, staticmethod | classmethod):
            return sha(type(value).__name__, self.digest(value.__func__, found, deeper))
        if isinstance(value, property):
            return sha(
                "property", *(self.digest(f, found, deeper) for f in (value.fget, value.fset, value.fdel))
            )
        if isinstance(value, list | tuple):
            return sha(type(value).__name__, *(self.digest(v, found, deeper) for v in value))
        if isinstance(value, dict):
            return sha(
                container_name(value, "dict"),
                *(self.digest(k, found, deeper) + self.digest(v, found, deeper) for k, v in value.items()),
            )
        if isinstance(value, set | frozenset):
            return sha(type(value).__name__, *sorted(self.digest(v, found, deeper) for v in value))
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
        base = sha("builtin", module_name, value.__qualname__, version_of(file, module_name))
        owner = getattr(value, "__self__", None)
        if owner is None or isinstance(owner, types.ModuleType):
            return base
        return sha(base, self.digest(owner, found, depth))

    def object_digest(self, value: Any, found: dict[str, str], depth: int) -> str:
        """Any other object: pickled with the code inside it replaced by its fingerprint."""
        buffer = io.BytesIO()
        try:
            DigestPickler(buffer, self, found, depth, value).dump(value)
        except Untrusted:
            raise
        except RecursionError:
            raise Untrusted(f"a {type(value).__name__} value nests too deeply to hash") from None
        except Exception as exc:
            raise Untrusted(f"{type(value).__name__} value cannot be hashed ({exc})") from None
        kind = type(value)
        cls = self.digest(kind, found, depth + 1) if self.is_user_class(kind) else kind.__qualname__
        return sha("object", cls, hashlib.sha256(buffer.getvalue()).hexdigest())

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
        return self._memoised(fn, sha("recursive", fn.__qualname__), self._function)

    def _function(self, fn: types.FunctionType) -> tuple[str, dict[str, str]]:
        code = fn.__code__
        nested: dict[str, str] = {}
        if not self.is_user_code_file(code.co_filename):
            return self._external_function(fn, nested), nested
        if self.is_local_file(code.co_filename):
            text = self.function_text(fn, drop_decorators=False)
            if text is not None:
                self.texts[id(fn)] = text
            source = text if text is not None else self.function_source(fn, drop_decorators=False)
        else:
            source = code_hash(code)
        own = sha(source, self.defaults_digest(fn, nested), *self.closure_values(fn, nested))
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
        return sha(*parts)

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
        return sha(*parts)

    def class_(self, cls: type) -> tuple[str, dict[str, str]]:
        """(own hash, what it references) of a class: its source, or (defined without source) its
        members; an installed class counts by its distribution's version."""
        return self._memoised(cls, sha("recursive-class", cls.__qualname__), self._class)

    def _class(self, cls: type) -> tuple[str, dict[str, str]]:
        nested: dict[str, str] = {}
        module = sys.modules.get(cls.__module__)
        file = str(getattr(module, "__file__", None) or "")
        if not self.is_user_class(cls):
            return sha(
                "external-class", cls.__module__, cls.__qualname__, version_of(file, cls.__module__)
            ), nested
        index = self.source_of(file) if file else None
        nodes = index.classes.get(cls.__name__, []) if index is not None else []
        if index is None or not nodes:
            return self._class_members(cls, nested), nested
        own_text = "\n".join(normalised(index, n, drop_decorators=False) for n in nodes)
        self.texts[id(cls)] = own_text
        own = sha(own_text, *self._assigned_members(cls, nested))
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
            if isinstance(member, CODE_OBJECTS) and code.startswith(inside):
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
        return sha(*parts)

    def add_module(self, label: str, module: types.ModuleType, found: dict[str, str], user: Any) -> None:
        file = str(getattr(module, "__file__", None) or "")
        if not file or not self.is_user_code_file(file):
            found[label] = self.module_digest(module, found)
            return
        attributes = attributes_used(user, label.rpartition(".")[2], self)
        if attributes is None:
            found[label] = self.module_digest(module, found)
            return
        found[label] = sha("local-module", module.__name__)
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
                known = self.installed_modules[name] = sha("module", name, version_of(file, name))
            return known
        if not file.endswith(".py"):
            raise Untrusted(
                f"it uses {name}, a compiled extension module of yours (its code cannot be hashed)"
            )
        text = self.sources.get(str(Path(file).resolve()))
        if name == self.flow_module:
            return sha("whole-module", text or "")
        try:
            closure = self.imports.closure(name)
        except CannotSee as exc:
            raise Untrusted(str(exc)) from None
        found.update({FILE_MARK + path: sha for path, sha in closure.files.items()})
        self.files_seen = self.files_seen or bool(closure.files)
        return sha("whole-module", text or "", closure.digest)


def attributes_used(user: Any, alias: str, hasher: Hasher) -> frozenset[str] | None:
    """Attributes read as `alias.X` in `user`'s source; None if `alias` is used any other way.

    Memoised by the function's text (see `_ATTRIBUTES`)."""
    if not isinstance(user, types.FunctionType):
        return None
    segment = hasher.segment(user)
    if segment is None:
        return _attributes_used(user, alias, hasher)
    key = (segment, alias)
    try:
        return _ATTRIBUTES[key]  # one lookup: an entry another thread evicts cannot fail a check-then-read
    except KeyError:
        pass
    found = _ATTRIBUTES[key] = _attributes_used(user, alias, hasher)
    if len(_ATTRIBUTES) > _ATTRIBUTES_SIZE:
        _ATTRIBUTES.popitem(last=False)
    return found


_ATTRIBUTES: OrderedDict[tuple[str, str], frozenset[str] | None] = OrderedDict()
"""(a function's text, a module's alias) -> `attributes_used`: a pure function of the two, found by
parsing the text and walking its tree twice. Every step that uses a local module is asked again at
every reload: a 200-step flow whose steps call a helper module's functions spent ~2/3 of a 23-34 ms
reload here. Oldest first out (no reordering: safe with two threads fingerprinting at once)."""
_ATTRIBUTES_SIZE = 20_000


def _attributes_used(user: types.FunctionType, alias: str, hasher: Hasher) -> frozenset[str] | None:
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
                found = parents.get(id(inner))
                if isinstance(found, ast.Attribute) and found.value is inner:
                    attributes.add(found.attr)
                else:
                    bare += 1
    return None if bare else frozenset(attributes)
