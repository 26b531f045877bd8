"""Provides the source index and normalisation: a file's text as the loader read it, its definitions
by line, and a function's source with comments, formatting and docstrings removed.

Source comes from the text the loader compiled, never from `linecache` or `inspect` (stale right after
an edit). Parsed trees are cached by path, only the latest text of each (see `_TREES`).
"""

from __future__ import annotations

import ast
import copy
import textwrap
import threading
import types
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from dsl.flowcode import split
from runner.fingerprint.normalise import Segments, Texts, cut_segment, normalise_tree, statements
from runner.fingerprint.values import sha

_TREES: OrderedDict[str, tuple[str, SourceIndex]] = OrderedDict()
"""The latest parsed text of each source file, by path. Only the latest: a parsed file is tens of
thousands of AST objects, and keeping every saved version made each full garbage collection of a
long watch session slower (200-step flow, 40 saves: 50 ms, growing to 280 ms)."""
_TREE_CACHE_SIZE = 256


class SourceIndex:
    """One source file: its lines, and (parsed only when asked for) its definitions by line.

    Functions are usually found without parsing the file: `function_segment` cuts a function's text
    out by its code object's line span. The whole-file tree (a 1,400-line flow: ~23 ms to parse) is
    left for classes, lambdas, and the rare function whose span does not parse alone; it is parsed in
    the parts a reload compiles (`dsl.flowcode`), each part's statements reused from the file's last
    tree while its text and line are unchanged (`_parse_in_parts`): one lambda or class in a 200-step
    flow made every reload parse the whole file, 18-25 ms against 6-8.
    """

    def __init__(self, text: str, path: str = "") -> None:
        self.text = text
        self.path = path
        self.lines = text.splitlines(keepends=True)
        self._tree: ast.Module | None = None
        self._parts: list[_Part] = []
        self._functions: dict[int, ast.stmt] = {}
        self._classes: dict[str, list[ast.ClassDef]] = {}
        self._lambdas: dict[int, list[ast.Lambda]] | None = None

    @property
    def tree(self) -> ast.Module:
        if self._tree is None:
            self._parts = _parse_in_parts(self.path, self.text)
            self._tree = ast.Module(
                body=[s for part in self._parts for s in part.statements], type_ignores=[]
            )
            for part in self._parts:
                functions, classes = part.definitions()
                self._functions.update(functions)
                for name, nodes in classes.items():
                    self._classes.setdefault(name, []).extend(nodes)
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
        """Lambdas by line; lambdas hide in expressions, so each part's tree is walked once, on demand."""
        if self._lambdas is None:
            self.tree  # noqa: B018 - parses on first use
            self._lambdas = {}
            for part in self._parts:
                self._lambdas.update(part.lambdas)
        return self._lambdas

    def function_segment(self, code: types.CodeType) -> str | None:
        """A function's definition (decorators included), dedented, cut out by its code's line span;
        None unless it parses on its own as exactly that function.

        The span runs from `co_firstlineno` (the first decorator) to the last line any instruction
        of the function, or of code nested in it, comes from. Lines after it produce no code (a
        trailing `pass` still does); a body of only a docstring makes an unparsable cut, and the
        caller then falls back on the whole-file parse.
        """
        key = (code.co_name, self.span_text(code))
        known = _SEGMENTS.get(key)
        kept = getattr(_local, "recording", None)
        if known is not None:
            _SEGMENTS.move_to_end(key)
            if kept is not None:
                kept.segments[key] = known
            return known[0] if known[1] else None
        segment, tree = cut_segment(*key)
        _SEGMENTS[key] = (segment, tree is not None)
        if len(_SEGMENTS) > _SEGMENTS_CACHE_SIZE:
            _SEGMENTS.popitem(last=False)
        if kept is not None:
            kept.segments[key] = (segment, tree is not None)
            kept.computed += 1
        if tree is not None:
            _PARSED[segment] = tree  # `normalised_text` takes it: the segment is not parsed twice
            if len(_PARSED) > _PARSED_SIZE:
                _PARSED.popitem(last=False)
        return segment if tree is not None else None

    def span_text(self, code: types.CodeType) -> str:
        """The text of a function's line span (`code_span`): what `function_segment` is keyed by."""
        first, last = code_span(code)
        return "".join(self.lines[first - 1 : last])


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


class _Part:
    """The statements of one part of a file's tree (`_parse_in_parts`) and, found on demand, the
    lambdas in them by line."""

    __slots__ = ("statements", "_definitions", "_lambdas")

    def __init__(self, statements: list[ast.stmt]) -> None:
        self.statements = statements
        self._definitions: tuple[dict[int, ast.stmt], dict[str, list[ast.ClassDef]]] | None = None
        self._lambdas: dict[int, list[ast.Lambda]] | None = None

    def definitions(self) -> tuple[dict[int, ast.stmt], dict[str, list[ast.ClassDef]]]:
        """Its function definitions by the line of their `def` and of their first decorator, and its
        class definitions by name."""
        if self._definitions is None:
            functions: dict[int, ast.stmt] = {}
            classes: dict[str, list[ast.ClassDef]] = {}
            for statement in self.statements:
                for node in statements(statement):
                    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                        functions[node.lineno] = node
                        if node.decorator_list:
                            functions.setdefault(node.decorator_list[0].lineno, node)
                    elif isinstance(node, ast.ClassDef):
                        classes.setdefault(node.name, []).append(node)
            self._definitions = functions, classes
        return self._definitions

    @property
    def lambdas(self) -> dict[int, list[ast.Lambda]]:
        if self._lambdas is None:
            self._lambdas = {}
            for statement in self.statements:
                for node in ast.walk(statement):
                    if isinstance(node, ast.Lambda):
                        self._lambdas.setdefault(node.lineno, []).append(node)
        return self._lambdas


_PART_TREES: OrderedDict[str, dict[tuple[int, str], _Part]] = OrderedDict()
"""File -> (first line - 1, text) -> that part of its latest tree (see `_TREES`: only the latest
tree of each file is kept)."""
_part_trees_lock = threading.Lock()


def _parse_in_parts(path: str, text: str) -> list[_Part]:
    """`ast.parse(text)`'s statements, in the file's parts (`dsl.flowcode.split`): each parsed alone
    with its line numbers moved to where it starts, or taken from the file's last tree for exactly
    the same text at the same line. A part's statements are those of the whole file's tree, position
    for position; a cut that does not parse alone falls back on the whole file, as one part."""
    previous = _PART_TREES.get(path, {}) if path else {}
    latest: dict[tuple[int, str], _Part] = {}
    try:
        for offset, text_of_part in split(text):
            part = previous.get((offset, text_of_part))
            if part is None:
                tree = ast.parse(text_of_part)
                if offset:
                    ast.increment_lineno(tree, offset)
                part = _Part(tree.body)
            latest[(offset, text_of_part)] = part
    except SyntaxError:
        return [_Part(ast.parse(text).body)]
    if path:
        with _part_trees_lock:  # the TUI and its watcher may fingerprint at once
            _PART_TREES[path] = latest
            _PART_TREES.move_to_end(path)
            if len(_PART_TREES) > _TREE_CACHE_SIZE:
                _PART_TREES.popitem(last=False)
    return list(latest.values())


def index_source(path: str, text: str) -> SourceIndex:
    digest = sha(text)
    cached = _TREES.get(path)
    if cached is not None and cached[0] == digest:
        _TREES.move_to_end(path)
        return cached[1]
    index = SourceIndex(text, path)
    _TREES[path] = (digest, index)
    _TREES.move_to_end(path)
    if len(_TREES) > _TREE_CACHE_SIZE:
        _TREES.popitem(last=False)
    return index


_NORMALISED: OrderedDict[str, str] = OrderedDict()
_NORMALISED_CACHE_SIZE = 20_000


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
    kept = getattr(_local, "recording", None)
    if cached is not None:
        _NORMALISED.move_to_end(key)
        if kept is not None:
            kept.texts[(drop_decorators, segment)] = cached
        return cached
    tree = _PARSED.pop(segment, None)
    if tree is None:
        try:
            tree = ast.parse(segment)
        except SyntaxError:
            if node is None:
                raise
            # A copy: the file's tree is read again by later loads (`_parse_in_parts`), and what
            # follows strips the docstrings and decorators of the tree it is given.
            tree = ast.Module(body=[copy.deepcopy(node)], type_ignores=[])
    text = normalise_tree(tree, segment, drop_decorators=drop_decorators)
    _NORMALISED[key] = text
    if len(_NORMALISED) > _NORMALISED_CACHE_SIZE:
        _NORMALISED.popitem(last=False)
    if kept is not None:
        kept.texts[(drop_decorators, segment)] = text
        kept.computed += 1
    return text


class Recording:
    """What `function_segment` and `normalised_text` answered on one thread while it was on
    (`recording`), each answer by what it was asked, and how many of them were worked out (not
    memoised): what `runner.fingerprint.textcache` keeps for the next process."""

    __slots__ = ("segments", "texts", "computed")

    def __init__(self) -> None:
        self.segments: dict[tuple[str, str], tuple[str, bool]] = {}
        """(function name, the text of its line span) -> `function_segment`'s memo entry."""
        self.texts: dict[tuple[bool, str], str] = {}
        """(drop_decorators, segment) -> `normalised_text`'s answer."""
        self.computed = 0


_local = threading.local()
"""The thread's `Recording`, if one is on (the TUI and its watcher may fingerprint at once)."""


@contextmanager
def recording() -> Iterator[Recording]:
    """Record this thread's answers of `function_segment` and `normalised_text` meanwhile."""
    previous = getattr(_local, "recording", None)
    kept = _local.recording = Recording()
    try:
        yield kept
    finally:
        _local.recording = previous


def is_memoised(name: str, text: str) -> bool:
    """Whether `function_segment` knows the function `name` of this span text already."""
    return (name, text) in _SEGMENTS


def remember(segments: Segments, texts: Texts, *, worked_out: bool = False) -> None:
    """Memoise answers worked out by another process (`runner.fingerprint.textcache`,
    `runner.fingerprint.texthelp`). Every answer is a function of what it is keyed by, so one worked
    out elsewhere is the one this process would work out; an answer memoised here already is kept.
    The memos keep their bounds, the least recently used going first. `worked_out`: the answers
    were worked out just now, for this thread's computation, and count as its own for a recording
    (see `Recording.computed`) — answers read back from a file do not."""
    kept = getattr(_local, "recording", None)
    if worked_out and kept is not None:
        kept.computed += len(segments)
    for name, text, segment, ok in segments[-_SEGMENTS_CACHE_SIZE:]:
        _SEGMENTS.setdefault((name, text), (text if segment is None else segment, ok))
    for drop, segment, normal in texts[-_NORMALISED_CACHE_SIZE:]:
        _NORMALISED.setdefault(f"{drop}:{segment}", normal)
    while len(_SEGMENTS) > _SEGMENTS_CACHE_SIZE:
        _SEGMENTS.popitem(last=False)
    while len(_NORMALISED) > _NORMALISED_CACHE_SIZE:
        _NORMALISED.popitem(last=False)
