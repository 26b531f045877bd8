"""Provides `DigestPickler`: how the reference closure hashes an arbitrary value, with the code inside it
hashed by what it runs (see `runner.fingerprint.hasher`)."""

from __future__ import annotations

import functools
import io
import pickle
import types
from typing import TYPE_CHECKING, Any

from dsl.step import Step

if TYPE_CHECKING:
    from runner.fingerprint.hasher import Hasher

CODE_OBJECTS = (
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


class DigestPickler(pickle.Pickler):
    """Pickles an arbitrary value to hash it, with every piece of code inside it (functions, methods,
    modules, the user's classes) replaced by its fingerprint: an object holding a local function
    (`FunctionTransformer(func=clean)`, a registry instance) changes when that function's code does."""

    def __init__(
        self, file: io.BytesIO, hasher: Hasher, found: dict[str, str], depth: int, root: Any
    ) -> None:
        super().__init__(file, protocol=5)
        self._hasher = hasher
        self._found = found
        self._depth = depth
        self._root = root

    def persistent_id(self, obj: Any) -> str | None:
        if obj is self._root:
            return None
        if isinstance(obj, CODE_OBJECTS) or isinstance(obj, Step):
            return self._hasher.digest(obj, self._found, self._depth + 1)
        if isinstance(obj, type) and self._hasher.is_user_class(obj):
            return self._hasher.digest(obj, self._found, self._depth + 1)
        return None
