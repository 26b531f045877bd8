"""Provides `ImportScanner`: what a step can import at run time, found without importing anything.

A module imported inside a step body (`import helpers`, `from pkg import sub`,
`importlib.import_module("plugins.csv")`) runs in the worker, so the parent process may never have
loaded it. Its fingerprint is the text of every one of the user's modules it can reach: the module,
the packages above it, and, transitively, every user module those import anywhere in their text
(top level or inside a function). Installed and standard-library modules count by their
distribution's version (`dsl.locality`).

What cannot be seen is reported, not guessed: a module name computed at run time
(`importlib.import_module(name)`) or a compiled extension module of the user's own raises
`Untrusted`, and the step then always runs.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.machinery
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dsl.locality import is_user_file, version_of

_DYNAMIC_IMPORTERS = frozenset({"import_module", "__import__"})


class CannotSee(Exception):
    """An import the fingerprint cannot follow (the message says which and where)."""


@dataclass(frozen=True)
class Closure:
    """What importing one module can reach.

    Attributes:
        digest: hash of the texts of the user's modules reached and the versions of installed ones.
        files: absolute path -> SHA-256 of the text, for each of the user's modules reached.
    """

    digest: str
    files: dict[str, str] = field(default_factory=dict)


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def imports_in(tree: ast.AST, package: str, where: str) -> Iterator[str]:
    """Module names a piece of code imports: `import`, `from … import` (relative ones resolved
    against `package`; `from m import x` yields `m.x` too, in case `x` is a submodule) and
    `importlib.import_module` / `__import__` with a literal name.

    Raises:
        CannotSee: an `import_module`/`__import__` call whose module name is computed.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", node.level, package)
            if base is None:
                continue
            if base:
                yield base
            yield from (
                f"{base}.{alias.name}" if base else alias.name for alias in node.names if alias.name != "*"
            )
        elif isinstance(node, ast.Call):
            func = node.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else None
            )
            if name not in _DYNAMIC_IMPORTERS:
                continue
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                anchor = node.args[1] if name == "import_module" and len(node.args) > 1 else None
                anchor_name = anchor.value if isinstance(anchor, ast.Constant) else package
                level = len(first.value) - len(first.value.lstrip("."))
                resolved = _absolute(first.value.lstrip("."), level, str(anchor_name or ""))
                if resolved:
                    yield resolved
            else:
                raise CannotSee(
                    f"{where} imports a module by a computed name ({name}(…) at line {node.lineno})"
                )


def _absolute(module: str, level: int, package: str) -> str | None:
    if not level:
        return module
    parts = package.split(".") if package else []
    if level - 1 > len(parts):
        return None
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, module] if module else base)


class ImportScanner:
    """Resolves module names to files and hashes their import closures; memoised per instance (a load).

    Args:
        search_path: directories to find top-level modules in, first to last (the flow's directory,
            then `sys.path`).
    """

    def __init__(self, search_path: Iterable[str]) -> None:
        self.search_path = list(dict.fromkeys(search_path))
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}
        self._closures: dict[str, Closure] = {}
        self._texts: dict[str, tuple[str, list[str]]] = {}

    def spec(self, name: str) -> importlib.machinery.ModuleSpec | None:
        """Where `import name` would load from (without importing it or its packages)."""
        if name in self._specs:
            return self._specs[name]
        parent, _, _ = name.rpartition(".")
        found: importlib.machinery.ModuleSpec | None = None
        try:
            if name in sys.builtin_module_names:
                found = importlib.machinery.ModuleSpec(name, None, origin="built-in")
            elif not parent:
                found = importlib.machinery.PathFinder.find_spec(name, self.search_path)
            else:
                outer = self.spec(parent)
                locations = outer.submodule_search_locations if outer is not None else None
                if locations:
                    found = importlib.machinery.PathFinder.find_spec(name, list(locations))
        except (ImportError, ValueError, OSError):
            found = None  # not importable here: it fails the same way in the worker
        self._specs[name] = found
        return found

    def closure(self, name: str) -> Closure:
        """The import closure of module `name` (an unknown module counts by its name only: importing
        it fails the same way wherever it runs).

        Raises:
            CannotSee: the closure reaches a computed import or one of the user's extension modules.
        """
        known = self._closures.get(name)
        if known is not None:
            return known
        files: dict[str, str] = {}
        parts: dict[str, str] = {}
        todo = [name]
        seen: set[str] = set()
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            if "." in current:
                todo.append(current.rpartition(".")[0])  # importing a.b runs a/__init__.py first
            spec = self.spec(current)
            origin = spec.origin if spec is not None else None
            if spec is None or not origin or origin in ("built-in", "frozen"):
                parts[current] = "unknown" if spec is None else f"builtin {sys.version_info[:2]}"
                continue
            if not is_user_file(origin):
                parts[current] = version_of(origin, current)
                continue
            if not origin.endswith(".py"):
                raise CannotSee(f"{current} is a compiled extension module of yours ({Path(origin).name})")
            path = str(Path(origin).resolve())
            sha, imported = self._scan(path, current, spec.submodule_search_locations is not None)
            files[path] = sha
            parts[current] = sha
            todo.extend(imported)
        digest = text_sha("\0".join(f"{k}={v}" for k, v in sorted(parts.items())))
        result = self._closures[name] = Closure(digest, files)
        return result

    def _scan(self, path: str, module: str, is_package: bool) -> tuple[str, list[str]]:
        """(text hash, modules imported anywhere in it) for one of the user's module files."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CannotSee(f"cannot read {path}: {exc}") from None
        sha = text_sha(text)
        cached = _SCANS.get((path, sha, module))
        if cached is None:
            try:
                tree = ast.parse(text)
            except SyntaxError as exc:
                raise CannotSee(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
            package = module if is_package else module.rpartition(".")[0]
            cached = _SCANS[(path, sha, module)] = sorted(set(imports_in(tree, package, f"module {module}")))
            if len(_SCANS) > 4096:
                _SCANS.pop(next(iter(_SCANS)))
        return sha, cached


_SCANS: dict[tuple[str, str, str], list[str]] = {}
"""(file, text hash, module name) -> modules it imports: a reload re-parses only edited modules."""
