"""Provides the source index and normalisation: a file's text as the loader read it, its definitions
by line, and a function's source with comments, formatting and docstrings removed.

Source comes from the text the loader compiled, never from `linecache` or `inspect` (stale right after
an edit). Parsed trees are cached by path, only the latest text of each (see `_TREES`).
"""

from __future__ import annotations

import ast
import textwrap
import types
from collections import OrderedDict
from collections.abc import Iterator

from runner.fingerprint.unparse import quick_unparse
from runner.fingerprint.values import sha

_TREES: OrderedDict[str, tuple[str, SourceIndex]] = OrderedDict()
"""The latest parsed text of each source file, by path. Only the latest: a parsed file is tens of
thousands of AST objects, and keeping every saved version made each full garbage collection of a
long watch session slower (200-step flow, 40 saves: 50 ms, growing to 280 ms)."""
_TREE_CACHE_SIZE = 256


class SourceIndex:
    """One source file: its lines, and (parsed only when asked for) its definitions by line.

    Functions are usually found without parsing the file: `function_segment` cuts a function's text
    out by its code object's line span. The whole-file parse (a 1,400-line flow: ~23 ms, most of a
    reload) is left for classes, lambdas, and the rare function whose span does not parse alone.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self._tree: ast.Module | None = None
        self._functions: dict[int, ast.stmt] = {}
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
    def functions(self) -> dict[int, ast.stmt]:
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
        first, last = code_span(code)
        text = "".join(self.lines[first - 1 : last])
        key = (code.co_name, text)
        known = _SEGMENTS.get(key)
        if known is not None:
            _SEGMENTS.move_to_end(key)
            return known[0] if known[1] else None
        segment = textwrap.dedent(text)
        try:
            tree: ast.Module | None = ast.parse(segment)
        except SyntaxError:
            tree = None
        body = tree.body if tree is not None else []
        ok = (
            len(body) == 1
            and isinstance(body[0], ast.FunctionDef | ast.AsyncFunctionDef)
            and body[0].name == code.co_name
        )
        _SEGMENTS[key] = (segment, ok)
        if len(_SEGMENTS) > _SEGMENTS_CACHE_SIZE:
            _SEGMENTS.popitem(last=False)
        if ok and tree is not None:
            _PARSED[segment] = tree  # `normalised_text` takes it: the segment is not parsed twice
            if len(_PARSED) > _PARSED_SIZE:
                _PARSED.popitem(last=False)
        return segment if ok else None


_SEGMENTS: OrderedDict[tuple[str, str], tuple[str, bool]] = OrderedDict()
"""(function name, the text of its line span) -> (that text dedented, whether it parses as exactly
that function): a reload neither dedents nor parses a function whose text it has seen (no trees
kept: see `_TREES`)."""
_SEGMENTS_CACHE_SIZE = 20_000

_PARSED: OrderedDict[str, ast.Module] = OrderedDict()
"""Segments `function_segment` just parsed, each taken (and then changed) by the one `normalised_text`
that follows: a handful at a time, so no trees pile up (see `_TREES`)."""
_PARSED_SIZE = 16


def code_span(code: types.CodeType) -> tuple[int, int]:
    """(first line, last line) of a function's source, from its code and the code nested in it.

    Memoised by the code object: equal code objects have equal line tables, hence equal spans, and
    a reload keeps the code of every part of the flow file it did not recompile (`dsl.flowcode`).
    """
    span = _SPANS.get(code)
    if span is None:
        span = _SPANS[code] = _walk_span(code)
        if len(_SPANS) > _SEGMENTS_CACHE_SIZE:
            _SPANS.popitem(last=False)
    return span


_SPANS: OrderedDict[types.CodeType, tuple[int, int]] = OrderedDict()


def _walk_span(code: types.CodeType) -> tuple[int, int]:
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


def index_source(path: str, text: str) -> SourceIndex:
    digest = sha(text)
    cached = _TREES.get(path)
    if cached is not None and cached[0] == digest:
        _TREES.move_to_end(path)
        return cached[1]
    index = SourceIndex(text)
    _TREES[path] = (digest, index)
    _TREES.move_to_end(path)
    if len(_TREES) > _TREE_CACHE_SIZE:
        _TREES.popitem(last=False)
    return index


_NORMALISED: OrderedDict[str, str] = OrderedDict()
_NORMALISED_CACHE_SIZE = 20_000


def _strip_docstrings(tree: ast.AST) -> None:
    # Definitions are statements: `_statements` finds them all without visiting every expression
    # node as `ast.walk` does (that walk was a third of a 10,000-step flow's static fingerprints).
    for inner in _statements(tree):
        if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module):
            body = inner.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                inner.body = body[1:] or [ast.Pass()]


def normalised(index: SourceIndex, node: ast.stmt, *, drop_decorators: bool) -> str:
    """A definition's source without comments, formatting, docstrings (and optionally decorators).

    Memoised by the definition's exact text, so a reload re-normalises only what was edited.
    """
    decorators = getattr(node, "decorator_list", None)
    first = node.lineno if drop_decorators or not decorators else decorators[0].lineno
    segment = textwrap.dedent("".join(index.lines[first - 1 : node.end_lineno]))
    return normalised_text(segment, drop_decorators=drop_decorators, node=node)


def normalised_text(segment: str, *, drop_decorators: bool, node: ast.stmt | None = None) -> str:
    """`normalised` for a definition's text (`node`: its tree, if the text alone does not parse)."""
    key = f"{drop_decorators}:{segment}"
    cached = _NORMALISED.get(key)
    if cached is not None:
        _NORMALISED.move_to_end(key)
        return cached
    tree = _PARSED.pop(segment, None)
    if tree is None:
        try:
            tree = ast.parse(segment)
        except SyntaxError:
            if node is None:
                raise
            tree = ast.Module(body=[node], type_ignores=[])
    if "'" in segment or '"' in segment:  # a docstring is a string literal, which needs a quote
        _strip_docstrings(tree)
    if drop_decorators:
        for inner in tree.body:
            if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef):
                inner.decorator_list = []
    text = quick_unparse(tree)
    if text is None:
        text = ast.unparse(tree)
    _NORMALISED[key] = text
    if len(_NORMALISED) > _NORMALISED_CACHE_SIZE:
        _NORMALISED.popitem(last=False)
    return text
