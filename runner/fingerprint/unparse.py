"""Provides `quick_unparse`: `ast.unparse` of a small function, character for character, several
times faster.

`ast.unparse` walks the tree with a visitor, a context manager per bracket and a precedence table
per node: for a 10,000-step flow, whose steps are mostly a few lines each, it was a third of the
static fingerprints. This writes the same text directly for the nodes small functions are mostly
made of (a `def` with any arguments; `return`, assignments to names, expression statements, `pass`;
names, constants, arithmetic and unary operators, calls, attributes, tuples and lists) and gives up
(None) on anything else, which `ast.unparse` then writes. `tests/test_unparse.py` checks it against
`ast.unparse` on the two thousand functions or more of the standard library and this repository it
writes.
"""

from __future__ import annotations

import ast

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported: the helper interpreter of `texthelp` imports this module
    from typing import Any

_INFINITY: str = ast._INFSTR  # type: ignore[attr-defined]
_UNPARSER: Any = ast._Unparser  # type: ignore[attr-defined]
_PRECEDENCE: Any = ast._Precedence  # type: ignore[attr-defined]
_BINARY: dict[type[ast.operator], tuple[str, int]] = {
    getattr(ast, name): (text, int(_UNPARSER.binop_precedence[text]))
    for name, text in _UNPARSER.binop.items()
}
"""Operator -> (its text, its precedence), from `ast._Unparser`'s own tables (the same in 3.11-3.13),
so that the two cannot write an operator differently."""
_UNARY: dict[type[ast.unaryop], tuple[str, int]] = {
    getattr(ast, name): (f"{text} " if text == "not" else text, int(_UNPARSER.unop_precedence[text]))
    for name, text in _UNPARSER.unop.items()
}
"""As `_BINARY`; `not` is followed by a space, as `ast._Unparser.visit_UnaryOp` writes it."""
_TUPLE, _YIELD, _TEST, _ATOM = (int(_PRECEDENCE[p]) for p in ("TUPLE", "YIELD", "TEST", "ATOM"))
"""The precedences of `ast._Precedence` these nodes use."""


class _Unsupported(Exception):
    """A node `quick_unparse` does not write."""


def quick_unparse(tree: ast.Module) -> str | None:
    """`ast.unparse(tree)` for a module of one function made of the nodes above; None otherwise."""
    if len(tree.body) != 1 or tree.type_ignores:
        return None
    node = tree.body[0]
    if (
        type(node) is not ast.FunctionDef
        or node.type_comment is not None
        or getattr(node, "type_params", None)
    ):
        return None
    try:
        lines = [f"@{_expression(d, _TEST)}" for d in node.decorator_list]
        returns = f" -> {_expression(node.returns, _TEST)}" if node.returns is not None else ""
        lines.append(f"def {node.name}({_arguments(node.args)}){returns}:")
        lines += [f"    {_statement(s)}" for s in _body(node.body)]
    except _Unsupported:
        return None
    return "\n".join(lines)


def _body(body: list[ast.stmt]) -> list[ast.stmt]:
    first = body[0] if body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        raise _Unsupported  # written as a docstring
    return body


def _statement(node: ast.stmt) -> str:
    kind = type(node)
    if kind is ast.Return:
        value = node.value  # type: ignore[attr-defined]
        return "return" if value is None else f"return {_expression(value, _TEST)}"
    if kind is ast.Assign:
        if node.type_comment is not None:  # type: ignore[attr-defined]
            raise _Unsupported
        targets = "".join(f"{_expression(t, _TUPLE)} = " for t in node.targets)  # type: ignore[attr-defined]
        return targets + _expression(node.value, _TEST)  # type: ignore[attr-defined]
    if kind is ast.Expr:
        return _expression(node.value, _YIELD)  # type: ignore[attr-defined]
    if kind is ast.Pass:
        return "pass"
    raise _Unsupported


def _expression(node: Any, precedence: int) -> str:
    """The expression's text where its parent gave it `precedence` (`ast._Unparser.set_precedence`)."""
    kind = type(node)
    if kind is ast.Name:
        return str(node.id)
    if kind is ast.Constant:
        return _constant(node)
    if kind is ast.BinOp:
        operator, own = _BINARY[type(node.op)]
        if operator == "**":
            left, right = own + 1, own
        else:
            left, right = own, own + 1
        text = f"{_expression(node.left, left)} {operator} {_expression(node.right, right)}"
        return f"({text})" if precedence > own else text
    if kind is ast.UnaryOp:
        operator, own = _UNARY[type(node.op)]
        text = operator + _expression(node.operand, own)
        return f"({text})" if precedence > own else text
    if kind is ast.Call:
        arguments = [_expression(a, _TEST) for a in node.args]
        for keyword in node.keywords:
            value = _expression(keyword.value, _TEST)
            arguments.append(f"**{value}" if keyword.arg is None else f"{keyword.arg}={value}")
        return f"{_expression(node.func, _ATOM)}({', '.join(arguments)})"
    if kind is ast.Attribute:
        value = node.value
        space = " " if type(value) is ast.Constant and isinstance(value.value, int) else ""
        return f"{_expression(value, _ATOM)}{space}.{node.attr}"
    if kind is ast.Tuple:
        items = [_expression(e, _TEST) for e in node.elts]
        text = f"{items[0]}," if len(items) == 1 else ", ".join(items)
        return f"({text})" if not items or precedence > _TUPLE else text
    if kind is ast.List:
        return f"[{', '.join(_expression(e, _TEST) for e in node.elts)}]"
    raise _Unsupported


def _constant(node: ast.Constant) -> str:
    value = node.value
    if node.kind is not None or isinstance(value, tuple | frozenset):
        raise _Unsupported
    if value is ...:
        return "..."
    if isinstance(value, float | complex):
        return repr(value).replace("inf", _INFINITY).replace("nan", f"({_INFINITY}-{_INFINITY})")
    return repr(value)


def _arguments(node: ast.arguments) -> str:
    """`ast._Unparser.visit_arguments`."""
    if not (node.posonlyargs or node.defaults or node.vararg or node.kwonlyargs or node.kwarg):
        return ", ".join([_argument(a) for a in node.args])  # a step's usual arguments
    parts: list[str] = []
    positional = node.posonlyargs + node.args
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(node.defaults))
    defaults += node.defaults
    for index, (argument, default) in enumerate(zip(positional, defaults, strict=True), 1):
        text = _argument(argument)
        if default is not None:
            text += f"={_expression(default, _TEST)}"
        if index == len(node.posonlyargs):
            text += ", /"
        parts.append(text)
    if node.vararg or node.kwonlyargs:
        parts.append("*" + (_argument(node.vararg) if node.vararg else ""))
    for argument, default in zip(node.kwonlyargs, node.kw_defaults, strict=True):
        text = _argument(argument)
        if default is not None:
            text += f"={_expression(default, _TEST)}"
        parts.append(text)
    if node.kwarg:
        parts.append("**" + _argument(node.kwarg))
    return ", ".join(parts)


def _argument(node: ast.arg) -> str:
    if node.type_comment is not None:
        raise _Unsupported
    if node.annotation is None:
        return node.arg
    return f"{node.arg}: {_expression(node.annotation, _TEST)}"
