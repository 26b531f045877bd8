"""Provides `step`, the decorator users write flows with, and `Step`, the callable it returns.

The decorator only annotates: it validates the options and wraps the function. Wiring (`>>`) is
recorded in the current `dsl.wiring.Wiring`, and the graph is built by `dsl.graph.build_graph`.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple, overload

from dsl import wiring
from dsl.errors import FlowError
from dsl.operating import hook_list
from dsl.params import REQUIRED, Param

if TYPE_CHECKING:
    from dsl.connections import Resolved
    from dsl.jobs import JobOptions

TRIGGER_RULES = ("all_succeeded", "any_succeeded", "none_failed", "all_done")
"""When a step runs, given how its upstream steps ended.

- `all_succeeded` (default): every upstream succeeded (or was cached); otherwise the step is skipped.
- `any_succeeded`: at least one upstream succeeded; the outputs of the others arrive as None.
  The join after an if/else branch.
- `none_failed`: no upstream failed or was cancelled; skipped upstreams give None.
- `all_done`: whatever happened upstream; unfinished upstreams give None.
"""


_PLAIN_STEP: dict[str, Any] = {
    "fn": None,
    "file": None,
    "line": None,
    "name": None,
    "__module__": None,
    "__name__": None,
    "__qualname__": None,
    "__doc__": None,
    "__annotations__": None,
    "__wrapped__": None,
    "retries": 0,
    "retry_delay": 0.0,
    "timeout": None,
    "cache": True,
    "when": None,
    "trigger": "all_succeeded",
    "foreach": None,
    "version": None,
    "resources": None,
    "inputs": (),
    "env": (),
    "connections": (),
    "connection_env": None,
    "spec": None,
    "job": None,
    "on_success": (),
    "on_failure": (),
    "on_retry": (),
    "_signature": None,
    "arguments": None,
    "_param_defaults": None,
}
"""A bare `@step`'s attributes in the order `Step.__init__` sets them, its options at their defaults
(`Step.plain` fills in the rest)."""


class Step:
    """A step of a flow: a plain function plus its options. Calling it calls the function.

    Attributes:
        fn: the user's function.
        name: the step's name in the graph (default: the function's name).
        retries: how many times a failed execution is retried.
        retry_delay: seconds to wait before each retry.
        timeout: seconds after which the execution is killed and counted as failed.
        cache: False to execute on every run (the output is still stored for downstream steps).
        when: a predicate over upstream outputs or parameters (named like the step's own arguments);
            the step is skipped when it returns a false value.
        trigger: a rule from `TRIGGER_RULES`.
        foreach: the name of one of the step's arguments holding an iterable; the step runs once per
            item (each cached separately) and downstream steps receive the ordered list of outputs.
        version: an opaque string; changing it invalidates cached results without a code change.
        resources: abstract resources an executor may honour (e.g. Dask worker resources).
        inputs: declared input files: glob patterns relative to the flow file's directory (or
            absolute); their contents are part of the step's fingerprint.
        env: declared environment variables; their values are part of the step's fingerprint.
        connections: named connections from flow.toml / `[tool.flow]` whose variables the function
            finds in `os.environ` while it runs in the worker (see `dsl.connected`).
        connection_env: those variables as read when the flow loaded (None until then).
        spec: for an external step (a command, a container, a `uses:` function; see `dsl.external`),
            what it runs, hashed by the fingerprint in place of the function's source; None otherwise.
        job: for a job step (`dsl.jobs`), how the runner polls it; None otherwise.
        on_success, on_failure, on_retry: hooks (callables, or lists of them) called with the run's
            details (and `step`, `error`, `attempt`) when this step succeeds (executed, not cached),
            fails, or is retried; they never change the step's result or its fingerprint.
        file: the file the function was defined in.
        line: the line of its `def`.
        arguments: the function's arguments (`Argument`), what the graph reads them from.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        retries: int = 0,
        retry_delay: float = 0.0,
        timeout: float | None = None,
        cache: bool = True,
        when: Callable[..., Any] | None = None,
        trigger: str = "all_succeeded",
        foreach: str | None = None,
        version: str | None = None,
        resources: dict[str, Any] | None = None,
        inputs: Iterable[str] = (),
        env: Iterable[str] = (),
        connections: Iterable[str] = (),
        on_success: Any = None,
        on_failure: Any = None,
        on_retry: Any = None,
    ) -> None:
        if not callable(fn):
            raise FlowError(f"@step must decorate a function, got {type(fn).__name__}")
        code = getattr(fn, "__code__", None)
        self.fn = fn
        self.file: str = code.co_filename if code else "<unknown>"
        self.line: int = code.co_firstlineno if code else 0
        self.name = name if name is not None else fn.__name__
        if type(fn) is types.FunctionType:  # `functools.update_wrapper`, written out: a tenth of a step
            self.__module__ = fn.__module__
            self.__name__ = fn.__name__
            self.__qualname__ = fn.__qualname__
            self.__doc__ = fn.__doc__
            self.__annotations__ = fn.__annotations__
            self.__dict__.update(fn.__dict__)
            self.__wrapped__ = fn
        else:
            functools.update_wrapper(self, fn)
        bad = self._bad
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise bad(f"step name {self.name!r} must be a valid Python identifier")
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise bad(f"retries must be a whole number >= 0, got {retries!r}")
        if not isinstance(retry_delay, int | float) or retry_delay < 0:
            raise bad(f"retry_delay must be a number of seconds >= 0, got {retry_delay!r}")
        if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
            raise bad(f"timeout must be a number of seconds > 0, got {timeout!r}")
        if trigger not in TRIGGER_RULES:
            raise bad(f"trigger must be one of {', '.join(TRIGGER_RULES)}; got {trigger!r}")
        if when is not None and not callable(when):
            raise bad("when= must be a function or lambda over upstream outputs")
        self.retries = retries
        self.retry_delay = float(retry_delay)
        self.timeout = float(timeout) if timeout is not None else None
        self.cache = bool(cache)
        self.when = when
        self.trigger = trigger
        self.foreach = foreach
        self.version = version
        self.resources = dict(resources or {})
        self.inputs = _strings(inputs, "inputs", "file patterns", bad)
        self.env = _strings(env, "env", "environment variable names", bad)
        self.connections = _strings(connections, "connections", "connection names", bad)
        self.connection_env: Resolved | None = None
        self.spec: dict[str, Any] | None = None
        self.job: JobOptions | None = None
        try:
            self.on_success = hook_list(on_success, "on_success")
            self.on_failure = hook_list(on_failure, "on_failure")
            self.on_retry = hook_list(on_retry, "on_retry")
        except ValueError as exc:
            raise bad(str(exc)) from None
        self._signature: inspect.Signature | None = None
        if isinstance(fn, types.FunctionType) and not fn.__dict__:
            self.arguments = plain_arguments(fn)
        else:
            try:
                self._signature = inspect.signature(fn)
            except (TypeError, ValueError) as exc:
                raise bad(f"cannot read the function's signature: {exc}") from None
            self.arguments = tuple(
                Argument(p.name, p.kind, p.default, p.annotation) for p in self._signature.parameters.values()
            )
        if foreach is not None and all(a.name != foreach for a in self.arguments):
            raise bad(f"foreach={foreach!r} names no argument of the step")
        self._param_defaults = {
            a.name: a.default.default for a in self.arguments if isinstance(a.default, Param)
        }
        """Arguments declared `= param(...)`: a direct call gets the declared default, not the marker."""

    @classmethod
    def plain(cls, fn: Callable[..., Any]) -> Step:
        """`Step(fn)` with every option at its default, as the bare `@step` makes it: the same
        attributes, in the same order (`tests/test_dsl.py` compares them), without checking
        options no one gave: 2.4 µs a step against `Step(fn)`'s 5-6 (timeit), which is 25-35 ms
        of a 10,000-step flow's load. Anything but a plain function, or a name that is no
        identifier (a lambda's), goes through `Step(fn)`."""
        if type(fn) is not types.FunctionType or fn.__dict__ or not fn.__name__.isidentifier():
            return cls(fn)
        code = fn.__code__
        arguments = plain_arguments(fn)
        made = cls.__new__(cls)
        attributes = _PLAIN_STEP.copy()
        attributes["fn"] = attributes["__wrapped__"] = fn
        attributes["file"] = code.co_filename
        attributes["line"] = code.co_firstlineno
        attributes["name"] = attributes["__name__"] = fn.__name__
        attributes["__module__"] = fn.__module__
        attributes["__qualname__"] = fn.__qualname__
        attributes["__doc__"] = fn.__doc__
        attributes["__annotations__"] = fn.__annotations__
        attributes["resources"] = {}
        attributes["arguments"] = arguments
        attributes["_param_defaults"] = (
            {a.name: a.default.default for a in arguments if isinstance(a.default, Param)}
            if fn.__defaults__ or fn.__kwdefaults__
            else {}
        )
        made.__dict__ = attributes
        return made

    def _bad(self, message: str) -> FlowError:
        return FlowError(message, file=self.file, line=self.line, step=self.name)

    @property
    def signature(self) -> inspect.Signature:
        """`inspect.signature` of the function, read when first asked for (see `arguments`)."""
        if self._signature is None:
            self._signature = inspect.signature(self.fn)
        return self._signature

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function, as a unit test does: a `param(...)` argument left out gets its default."""
        if self._param_defaults:
            given = self.signature.bind_partial(*args, **kwargs).arguments
            for arg, default in self._param_defaults.items():
                if arg in given:
                    continue
                if default is REQUIRED:
                    raise TypeError(f"{self.name}() missing the required flow parameter '{arg}' (a param())")
                kwargs[arg] = default
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Step {self.name}>"

    def __rshift__(self, other: Step | Iterable[Step]) -> Any:
        for target in _as_steps(other, "right"):
            _record(self, target)
        return other

    def __rrshift__(self, other: Iterable[Step]) -> Step:
        for source in _as_steps(other, "left"):
            _record(source, self)
        return self

    def __lshift__(self, other: Step | Iterable[Step]) -> Any:
        for source in _as_steps(other, "right"):
            _record(source, self)
        return other

    def __rlshift__(self, other: Iterable[Step]) -> Step:
        for target in _as_steps(other, "left"):
            _record(self, target)
        return self


class Argument(NamedTuple):
    """One argument of a step's function, as its `inspect.Parameter` describes it (`default` and
    `annotation` are `inspect.Parameter.empty` when there is none)."""

    name: str
    kind: inspect._ParameterKind
    default: Any
    annotation: Any


_EMPTY = inspect.Parameter.empty


_PLAIN: dict[str, Argument] = {}
"""Name -> its `Argument` as a plain positional argument: the same value for every step taking it
(a step's name is an argument of each step downstream of it), made once."""
_PLAIN_KEPT = 100_000


def _plain_argument(name: str) -> Argument:
    if len(_PLAIN) >= _PLAIN_KEPT:
        _PLAIN.clear()
    made = _PLAIN[name] = Argument(name, _POSITIONAL_OR_KEYWORD, _EMPTY, _EMPTY)
    return made


def plain_arguments(fn: types.FunctionType) -> tuple[Argument, ...]:
    """The arguments of a plain function (no attributes: nothing for `inspect.signature` to follow,
    such as `__wrapped__` or `__signature__`), read from its code object, defaults and annotations
    exactly as `inspect.signature` reads them, in its order: positional, `*args`, keyword-only,
    `**kwargs`. A quarter of the cost: `inspect.signature` was a third of a 10,000-step flow's load.
    """
    code = fn.__code__
    names = code.co_varnames
    count, keyword_only = code.co_argcount, code.co_kwonlyargcount
    annotations = fn.__annotations__
    if not (
        annotations
        or fn.__defaults__
        or keyword_only
        or code.co_posonlyargcount
        or code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS)
    ):
        # Positional arguments alone, as most steps' (upstream outputs): half the cost of what follows.
        return tuple([_PLAIN.get(name) or _plain_argument(name) for name in names[:count]])
    defaults = fn.__defaults__ or ()
    keyword_defaults = fn.__kwdefaults__ or {}
    first_default = count - len(defaults)
    found = [
        Argument(
            name,
            _POSITIONAL_ONLY if at < code.co_posonlyargcount else _POSITIONAL_OR_KEYWORD,
            defaults[at - first_default] if at >= first_default else _EMPTY,
            annotations.get(name, _EMPTY),
        )
        for at, name in enumerate(names[:count])
    ]
    rest = count + keyword_only
    if code.co_flags & inspect.CO_VARARGS:
        found.append(Argument(names[rest], _VAR_POSITIONAL, _EMPTY, annotations.get(names[rest], _EMPTY)))
        rest += 1
    for name in names[count : count + keyword_only]:
        found.append(
            Argument(name, _KEYWORD_ONLY, keyword_defaults.get(name, _EMPTY), annotations.get(name, _EMPTY))
        )
    if code.co_flags & inspect.CO_VARKEYWORDS:
        found.append(Argument(names[rest], _VAR_KEYWORD, _EMPTY, annotations.get(names[rest], _EMPTY)))
    return tuple(found)


_POSITIONAL_ONLY = inspect.Parameter.POSITIONAL_ONLY
_POSITIONAL_OR_KEYWORD = inspect.Parameter.POSITIONAL_OR_KEYWORD
_VAR_POSITIONAL = inspect.Parameter.VAR_POSITIONAL
_KEYWORD_ONLY = inspect.Parameter.KEYWORD_ONLY
_VAR_KEYWORD = inspect.Parameter.VAR_KEYWORD


def _strings(value: Any, option: str, what: str, bad: Callable[[str], FlowError]) -> tuple[str, ...]:
    if type(value) is tuple and not value:  # the default, for nearly every step
        return ()
    items = [value] if isinstance(value, str) else value
    try:
        found = tuple(items)
    except TypeError:
        raise bad(f"{option}= must be a list of {what}, got {value!r}") from None
    if not all(isinstance(item, str) and item for item in found):
        raise bad(f"{option}= must be a list of {what}, got {value!r}")
    return found


def _as_steps(value: Any, side: str) -> list[Step]:
    items = [value] if isinstance(value, Step) else value
    try:
        steps = list(items)
    except TypeError:
        steps = [items]
    for item in steps:
        if not isinstance(item, Step):
            file, line = wiring.caller_location(3)
            raise FlowError(
                f"the {side} side of >> / << must be a step or a list of steps, got {item!r}",
                file=file,
                line=line,
            )
    return steps


def _record(upstream: Step, downstream: Step) -> None:
    file, line = wiring.caller_location(3)
    wiring.current().edges.append(wiring.Edge(upstream, downstream, file, line))


@overload
def step(fn: Callable[..., Any], /) -> Step: ...


@overload
def step(
    *,
    name: str | None = None,
    retries: int = 0,
    retry_delay: float = 0.0,
    timeout: float | None = None,
    cache: bool = True,
    when: Callable[..., Any] | None = None,
    trigger: str = "all_succeeded",
    foreach: str | None = None,
    version: str | None = None,
    resources: dict[str, Any] | None = None,
    inputs: Iterable[str] = (),
    env: Iterable[str] = (),
    connections: Iterable[str] = (),
    on_success: Any = None,
    on_failure: Any = None,
    on_retry: Any = None,
) -> Callable[[Callable[..., Any]], Step]: ...


def step(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Make a function a step; use bare (`@step`) or with options (`@step(retries=2, timeout=60)`).

    Arguments named after another step receive that step's output and imply the edge; other
    arguments with a default (or `param(...)`) are flow parameters. See `Step` for the options.
    """
    if fn is not None:
        if options:
            raise FlowError("use @step(option=...) without a positional function")
        return Step.plain(fn)

    def decorate(function: Callable[..., Any]) -> Step:
        return Step(function, **options)

    return decorate
