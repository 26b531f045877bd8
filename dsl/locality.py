"""Provides `is_user_file`: whether a Python file is the user's own code or something installed.

The cache hashes the user's own code by content and installed code by its distribution's version.
"The user's own" is decided by what a file *is*, never by what its path looks like:

- a file listed in the RECORD of an installed distribution (a `*.dist-info` directory beside it,
  as pip and every modern installer write) is installed code, identified by that distribution's
  name, version and RECORD (which holds every file's hash);
- a file of the standard library is Python's;
- a file of flow itself (`dsl`, `runner`, `tui`, wherever they are installed from) is the tool's;
- a file in one of the interpreter's own site-packages directories that no RECORD lists (a legacy
  `setup.py install`) is installed code all the same;
- anything else is the user's: the flow's directory, a sibling directory on `PYTHONPATH`, a
  directory added to `sys.path` at run time, an editable install of the user's own package (its
  RECORD lists only the `.pth` hook, not the sources).

RECORD files are read lazily, once per process and per directory, and only the distributions a file
could belong to are read first (by name, then all of them): a venv with scikit-learn and pandas has
~16,000 RECORD lines (~17 ms to read all of them on this kind of machine).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from functools import lru_cache
from pathlib import Path

_OWN_DIRS = tuple(
    str(Path(__file__).resolve().parent.parent / name) + os.sep for name in ("dsl", "runner", "tui")
)
"""flow's own packages: never the user's code, even when flow is installed editable from a checkout."""

_SITE_DIR_NAMES = frozenset({"site-packages", "dist-packages"})


def _stdlib_dirs() -> tuple[str, ...]:
    """The standard library's directory (where `os` lives; `lib-dynload` is inside it), as given
    and resolved. Not `sysconfig`: importing it costs start-up time and a generated module."""
    base = os.path.dirname(os.__file__)
    return tuple(dict.fromkeys((base + os.sep, os.path.realpath(base) + os.sep)))


_STDLIB_DIRS = _stdlib_dirs()


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


class _SiteDir:
    """The distributions installed in one directory (a `sys.path` entry with `*.dist-info` in it)."""

    def __init__(self, directory: str, entries: list[str]) -> None:
        self.directory = directory
        self.infos = sorted(e for e in entries if e.endswith(".dist-info"))
        self.files: dict[str, tuple[str, str]] = {}
        self._read: set[str] = set()

    def owner(self, relative: str) -> tuple[str, str] | None:
        """(distribution, version) whose RECORD lists `relative` (a path below this directory)."""
        found = self.files.get(relative)
        if found is not None:
            return found
        top = _normalise(relative.split("/", 1)[0].removesuffix(".py"))
        likely = [i for i in self.infos if _normalise(i.split("-", 1)[0]) == top]
        for group in (likely, self.infos):
            for info in group:
                if info not in self._read:
                    self._read_record(info)
            found = self.files.get(relative)
            if found is not None:
                return found
        return None

    def _read_record(self, info: str) -> None:
        """Index one distribution's files. Its identity is its name, version and a hash of its RECORD
        (which lists every file's own hash): a reinstall with changed code but the same version number
        is a different distribution."""
        self._read.add(info)
        stem = info.removesuffix(".dist-info")
        name, _, version = stem.partition("-")
        try:
            with open(os.path.join(self.directory, info, "RECORD"), encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError):
            return
        identity = (name, f"{version}+{hashlib.sha256(text.encode()).hexdigest()[:12]}")
        for line in text.splitlines():
            path = line.partition(",")[0]
            if path:
                self.files.setdefault(path, identity)


_SITE_DIRS: dict[str, _SiteDir | None] = {}


def _site_dir(directory: str) -> _SiteDir | None:
    if directory not in _SITE_DIRS:
        try:
            entries = os.listdir(directory)
        except OSError:
            entries = []
        _SITE_DIRS[directory] = (
            _SiteDir(directory, entries) if any(e.endswith(".dist-info") for e in entries) else None
        )
    return _SITE_DIRS[directory]


@lru_cache(maxsize=8192)
def distribution_of(path: str) -> tuple[str, str] | None:
    """(name, version) of the installed distribution whose RECORD lists this file, if any; a file
    in one of the interpreter's own site-packages directories that no RECORD lists (a legacy
    `setup.py install`, some conda packages) is installed code too, of an unrecorded version."""
    resolved = os.path.realpath(path)
    for candidate in dict.fromkeys((os.path.abspath(path), resolved)):
        parent = os.path.dirname(candidate)
        while True:
            site = _site_dir(parent)
            if site is not None:
                found = site.owner(os.path.relpath(candidate, parent).replace(os.sep, "/"))
                if found is not None:
                    return found
            up = os.path.dirname(parent)
            if up == parent:
                break
            parent = up
    for directory in _interpreter_site_dirs():
        if resolved.startswith(directory):
            return resolved[len(directory) :].split(os.sep, 1)[0].removesuffix(".py"), "unrecorded"
    return None


@lru_cache(maxsize=1)
def _interpreter_site_dirs() -> tuple[str, ...]:
    """The site-packages directories the interpreter itself set up (not any directory so named)."""
    import site

    found: list[str] = []
    try:
        found += site.getsitepackages()
    except AttributeError:  # an old virtualenv's `site` module
        pass
    user = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    found += [user] if isinstance(user, str) else []
    return tuple(os.path.realpath(d) + os.sep for d in found)


@lru_cache(maxsize=8192)
def is_stdlib_file(path: str) -> bool:
    """A file of Python's standard library (not of a site-packages directory inside it)."""
    resolved = os.path.realpath(path)
    for root in _STDLIB_DIRS:
        for candidate in (path, resolved):
            if candidate.startswith(root):
                first = candidate[len(root) :].split(os.sep, 1)[0]
                return first not in _SITE_DIR_NAMES
    return False


def is_own_file(path: str) -> bool:
    """A file of flow itself (`dsl`, `runner`, `tui`)."""
    return os.path.realpath(path).startswith(_OWN_DIRS)


@lru_cache(maxsize=8192)
def is_user_file(path: str) -> bool:
    """The user's own code: neither installed (RECORD), nor the standard library, nor flow itself."""
    if not path or path.startswith("<"):
        return False
    return not (is_stdlib_file(path) or is_own_file(path) or distribution_of(path) is not None)


@lru_cache(maxsize=8192)
def version_of(path: str, module_name: str) -> str:
    """What identifies installed code: its distribution's name and version, or Python's version."""
    if is_stdlib_file(path) or module_name.partition(".")[0] in sys.stdlib_module_names:
        return f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = distribution_of(path) if path else None
    if found is not None:
        return f"{found[0]}=={found[1]}"
    module = sys.modules.get(module_name.partition(".")[0])
    return str(getattr(module, "__version__", "?"))
