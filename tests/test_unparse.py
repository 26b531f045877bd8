"""`quick_unparse` writes exactly what `ast.unparse` writes, for every function it writes at all."""

from __future__ import annotations

import ast
import sys
import textwrap
import types
from pathlib import Path

import pytest

from runner.fingerprint.source import normalised_text
from runner.fingerprint.unparse import quick_unparse

REPO = Path(__file__).resolve().parent.parent
STDLIB = Path(types.__file__).parent

TRICKY = """
def arithmetic(a, b, c):
    x = (a + b) * c
    y = a + b * c - (a - b) - a // b % c
    z = 2 ** 3 ** 4
    w = (2 ** 3) ** 4
    v = a << 1 | b & c ^ 7
    u = (a | b) << c
    n = not -a, -(a + b), ~+a, -a ** b, (-a) ** b, not (a | b)
    return x @ y

def shapes(a, /, b=1, *rest: int, c, d: str = 'x', **more: float) -> tuple:
    t = ()
    one = (a,)
    two = a, b
    lst = [a, (b, c), []]
    f(one, (two, a), t)
    f(**more)
    f(key=(a, b), other=[a])
    return (a, b)

def constants():
    a = b = 1 .real
    c = (1.5).hex
    e = 1e999
    f = 1e999j
    g = -1
    h = b'bytes'
    i = 'it\\'s "quoted"\\n'
    j = ...
    k = None, True, False
    return a.b.c(d)(-e)

def only(*, k):
    pass

def star(*a):
    return

@decorator
@other.attribute(1, x=2)
def decorated(x) -> 'int':
    g(x)
"""


def _functions(source: str) -> list[ast.FunctionDef]:
    return [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)]


def _corpus() -> list[Path]:
    files = sorted(STDLIB.glob("*.py"))[:120]
    for package in ("dsl", "runner", "tui", "sample_flows", "benchmarks"):
        files += sorted((REPO / package).glob("**/*.py"))
    return files


def test_it_writes_what_ast_unparse_writes() -> None:
    written = 0
    sources = [TRICKY] + [f.read_text(encoding="utf-8") for f in _corpus()]
    for source in sources:
        try:
            functions = _functions(source)
        except SyntaxError:
            continue
        for function in functions:
            for decorators in (function.decorator_list, []):
                function.decorator_list = decorators
                tree = ast.Module(body=[function], type_ignores=[])
                text = quick_unparse(tree)
                if text is not None:
                    written += 1
                    assert text == ast.unparse(tree), ast.unparse(tree)
    assert written > 2000  # it writes most small functions: the comparison covers a lot


def test_it_gives_up_on_what_it_does_not_write() -> None:
    tricky = {f.name: f for f in _functions(TRICKY)}
    assert all(quick_unparse(ast.Module(body=[f], type_ignores=[])) is not None for f in tricky.values())
    for source in (
        "def f():\n    '''Doc.'''\n    return 1\n",
        "def f():\n    if x:\n        return 1\n",
        "def f():\n    return x[0]\n",
        "def f():\n    return f'{x}'\n",
        "def f():\n    return u'x'\n",
        "def f():\n    return g(*a)\n",
        "async def f():\n    return 1\n",
        "def f():\n    return 1\ndef g():\n    return 2\n",
        "class C:\n    pass\n",
    ):
        assert quick_unparse(ast.parse(source)) is None, source


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.11 or later")
def test_normalised_text_is_unchanged_by_it() -> None:
    """Comments, formatting, docstrings and (where dropped) decorators still do not count."""
    plain = "def train(data, lr=0.1):\n    return [x * lr for x in data]\n"
    restyled = textwrap.dedent('''
        @step(cache=True)
        def train(data, lr = 0.1):
            """Scale the data."""
            # a comment
            return [x*lr
                    for x in data]
    ''')
    assert normalised_text(plain, drop_decorators=True) == normalised_text(restyled, drop_decorators=True)
    small = "@step\ndef s1(s0):  # next\n    return (s0 +\n            1)\n"
    assert normalised_text(small, drop_decorators=True) == "def s1(s0):\n    return s0 + 1"
    assert normalised_text(small, drop_decorators=False) == "@step\ndef s1(s0):\n    return s0 + 1"
