"""Provides the normalisation of a function's source: its line span cut into a segment that parses as
exactly that function, and that function's text with comments, formatting, docstrings (and
optionally decorators) removed.

Pure functions of their text, with no memos and few imports: `runner.fingerprint.source` memoises
them for this process, and `runner.fingerprint.texthelp`'s helper interpreter imports this module
(and `unparse`) alone to work out a share of a large flow's functions.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator

from runner.fingerprint.unparse import quick_unparse

Segments = list[tuple[str, str, str | None, bool]]
"""`SourceIndex.function_segment`'s answers, each `(function name, span text, its segment or None if
the same, whether it parses)`."""
Texts = list[tuple[bool, str, str]]
"""`normalised_text`'s answers, each `(drop_decorators, segment, normalised text)`."""

_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")


def statements(node: ast.AST) -> Iterator[ast.AST]:
    """`node` and every statement nested in it (definitions and imports are statements), skipping the
    expressions a full `ast.walk` would also visit."""
    yield node
    for block in _BLOCKS:
        children = getattr(node, block, None)
        if isinstance(children, list):
            for child in children:
                if isinstance(child, ast.stmt | ast.excepthandler | ast.match_case):
                    yield from statements(child)


def cut_segment(name: str, text: str) -> tuple[str, ast.Module | None]:
    """`text` (a function's line span) dedented, and its tree if it parses as exactly the function
    `name` (else None)."""
    segment = textwrap.dedent(text)
    try:
        tree = ast.parse(segment)
    except SyntaxError:
        return segment, None
    body = tree.body
    ok = (
        len(body) == 1
        and isinstance(body[0], ast.FunctionDef | ast.AsyncFunctionDef)
        and body[0].name == name
    )
    return segment, tree if ok else None


def normalise_tree(tree: ast.Module, segment: str, *, drop_decorators: bool) -> str:
    """The normalised text of `segment` from its tree (which this changes: docstrings, decorators)."""
    if "'" in segment or '"' in segment:  # a docstring is a string literal, which needs a quote
        _strip_docstrings(tree)
    if drop_decorators:
        for inner in tree.body:
            if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef):
                inner.decorator_list = []
    text = quick_unparse(tree)
    return ast.unparse(tree) if text is None else text


def work_out(spans: list[tuple[str, str]]) -> tuple[Segments, Texts]:
    """The segment of each (function name, span text), and the normalised text (decorators dropped)
    of each segment that parses: what the helper interpreter works out for `runner.fingerprint.source`'s
    memos (`remember`)."""
    segments: Segments = []
    texts: Texts = []
    for name, text in spans:
        segment, tree = cut_segment(name, text)
        segments.append((name, text, None if segment == text else segment, tree is not None))
        if tree is not None:
            texts.append((True, segment, normalise_tree(tree, segment, drop_decorators=True)))
    return segments, texts


def _strip_docstrings(tree: ast.AST) -> None:
    # Definitions are statements: `statements` finds them all without visiting every expression
    # node as `ast.walk` does (that walk was a third of a 10,000-step flow's static fingerprints).
    for inner in statements(tree):
        if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module):
            body = inner.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                inner.body = body[1:] or [ast.Pass()]
