"""Provides `StaticPrint` and `static_prints`: the parts of every step's fingerprint known once the
flow has loaded (code, helpers, options, command, files imported at run time).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from dsl.gcpause import gc_paused
from dsl.loader import LoadedFlow
from dsl.step import Step
from runner.fingerprint.bytecode import global_reads
from runner.fingerprint.hasher import FILE_MARK, Hasher
from runner.fingerprint.source import code_span
from runner.fingerprint.textcache import kept_texts
from runner.fingerprint.texthelp import work_ahead
from runner.fingerprint.values import Untrusted, sha, value_hash


@dataclass(frozen=True, init=False)
class StaticPrint:
    """What a step's fingerprint is made of that is known once the flow has loaded.

    Attributes:
        code: hash of the step's normalised source.
        helpers: qualified name -> hash, for everything it references from the project.
        options: hash of its result-changing options (`foreach`, `version`, `when=`).
        untrusted: why the step cannot be fingerprinted (then it always runs), or None.
        command: hash of an external step's `Step.spec`; "" for a function step.
        files: absolute path -> SHA-256 of the text, for each of the user's modules the step imports
            at run time (inside a function body), as read at planning: the worker checks it executed
            exactly these texts (`runner.freshness`), and `--watch` reloads when one is saved.
        texts: the hash of `code` and of each helper -> the normalised source (or a constant's repr)
            it was computed from, where known: the store keeps them (`runner.store.sources`) so a
            later plan or `flow diff` can show what changed. Not compared: the hashes say it all.
    """

    code: str
    helpers: dict[str, str] = field(default_factory=dict)
    options: str = ""
    untrusted: str | None = None
    command: str = ""
    files: dict[str, str] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    fixed_text: tuple[str, str] = field(init=False, compare=False, repr=False)
    """This print's parts of the fingerprint's text (`runner.fingerprint.combine`), each followed by a
    NUL: those before a fan-out item (code, options) and after it (command, helpers). Joined once per
    load, not once per step and run (they were a third of a fully cached step's fingerprinting), and
    as the print is made: a `cached_property` took 1.0 µs at a new load's first run of each step, the
    joins alone 0.4."""

    def __init__(
        self,
        code: str,
        helpers: dict[str, str] | None = None,
        options: str = "",
        untrusted: str | None = None,
        command: str = "",
        files: dict[str, str] | None = None,
        texts: dict[str, str] | None = None,
    ) -> None:
        # Each load makes one per step: the generated frozen `__init__` sets each field through
        # `object.__setattr__`, twice the cost of filling the dict (as `runner.events` does).
        self.__dict__.update(
            code=code,
            helpers={} if helpers is None else helpers,
            options=options,
            untrusted=untrusted,
            command=command,
            files={} if files is None else files,
            texts={} if texts is None else texts,
            fixed_text=(
                f"{code}\0{options}\0",
                (f"c:{command}\0" if command else "")
                + ("".join([f"h:{k}={v}\0" for k, v in sorted(helpers.items())]) if helpers else ""),
            ),
        )


_SHAS: dict[tuple[str, ...], str] = {}
"""`sha` of the parts a print hashes by itself (a step's normalised source, its options), by those
parts: every load of a flow hashes the same texts again (a reload, all of its steps'), and a text is
the very string `runner.fingerprint.source` keeps, whose hash Python has cached. Cleared when full."""
_SHAS_SIZE = 20_000


def _sha(*parts: str) -> str:
    digest = _SHAS.get(parts)
    if digest is None:
        if len(_SHAS) >= _SHAS_SIZE:
            _SHAS.clear()
        digest = _SHAS[parts] = sha(*parts)
    return digest


_PLAIN_OPTIONS = sha(repr(None), repr(None))
"""The options of a step with no `foreach` and no `version` (most steps), hashed once."""


def _options(item: Step) -> str:
    """The hash of a step's `foreach` and `version` (a plain step's, without building it)."""
    if item.foreach is None and item.version is None:
        return _PLAIN_OPTIONS
    return _sha(repr(item.foreach), repr(item.version))


class _ByCode(NamedTuple):
    """What a step function's code object alone decides of its print (see `_BY_CODE`)."""

    code_object: types.CodeType
    code: str
    """The hash of its normalised source."""
    text: str
    """That source."""
    body_imports: bool
    """Whether its body may import anything (its text has `import`, or is not known)."""
    modules: tuple[tuple[str, types.ModuleType], ...] | None
    """When its print was last made from its source, options and whole modules that are not the
    user's alone (the standard library's, installed packages': hashed by name and version), the
    globals it read, as (name, module) in name order: `()` when it read none. None when anything else
    went in: a global that is not such a module, something captured, an import in its body, a
    `when=`, a connection."""
    helpers: dict[str, str]
    """Those modules' hashes, as the print's helpers."""
    namespace: str | None
    """The `__name__` of the globals they were read from (it labels the helpers)."""
    reads: frozenset[str]
    """The globals its code reads (`global_reads`), for `_same_modules`: looked up again by the code
    object at every load, they cost a hash of the code object (~1.6 µs), a third of a step's print."""
    made: StaticPrint | None = None
    """The print last made at once from this entry (a print is never changed once made, so the next
    load's is the same object while its options are the same): making it again was half of a kept
    step's print, ~1 µs."""


_BY_CODE: dict[int, _ByCode] = {}
"""id of a step function's code -> what that code decides of its print, for the next load that
executes the same code object: it need not cut, normalise and hash the function's source again, nor
look for imports in a body that has none; and a print that was made of the source, the options and
modules that are not the user's alone is made at once while it still is (the same globals hold the
same module objects).

Keyed by identity (the code is held, so the id stays its own), never by equality: equal code objects
may come from different texts (an annotation or a default value is compiled into the code around
the function, not into the function's). The same code object is the same text: a load executes the
code the last load compiled for each part of the flow file it did not compile again
(`dsl.flowcode`; at the file's first cut into parts, the code its whole compile made of the functions
of each part of the same text at the same line: `dsl.flowcode.adopting`), and anything else is
compiled anew. Everything else is asked at every load: the
helpers (the values of the globals it reads, what it captured, the files of what it imports), and
for a print made at once whether the globals it reads are still exactly those modules (a helper
added below it, a name bound to another module or to another value) and whether a `when=` or
connection was given by a `step(...)` call elsewhere in the file. A module's hash is its name and
its installed version, which this process reads once per file anyway (`dsl.locality.distribution_of`)."""
_BY_CODE_SIZE = 20_000


def _remember(kept: _ByCode) -> None:
    if len(_BY_CODE) >= _BY_CODE_SIZE:
        _BY_CODE.clear()
    _BY_CODE[id(kept.code_object)] = kept


def static_prints(loaded: LoadedFlow) -> dict[str, StaticPrint]:
    """Fingerprint parts of every step in a loaded flow that do not depend on run-time values (the
    functions' normalised sources kept beside the flow file for the next process: `kept_texts`)."""
    with gc_paused(), kept_texts(str(loaded.path)):
        return _static_prints(loaded)


def read_ahead(codes: Iterable[types.CodeType]) -> None:
    """Scan the functions defined at the top level of `codes` (a flow file's parts, compiled ahead of
    its next load by `dsl.flowcode.warm`) as `static_prints` would: their line spans and the globals
    they read, memoised by code object. The next load executes these very code objects, so its
    fingerprints find them (a 200-step flow's first reload scanned every step again: 4-5 ms)."""
    for code in codes:
        for const in code.co_consts:
            if isinstance(const, types.CodeType) and const.co_flags & inspect.CO_OPTIMIZED:
                code_span(const)
                global_reads(const)


def _static_prints(loaded: LoadedFlow) -> dict[str, StaticPrint]:
    hasher = Hasher(loaded)
    work_ahead(hasher, _new_step_functions(loaded))
    prints: dict[str, StaticPrint] = {}
    for name, node in loaded.graph.nodes.items():
        item = node.step
        try:
            if item.spec is not None:
                prints[name] = _external_print(hasher, item)
                continue
            if item.job is not None:
                prints[name] = _job_print(hasher, item)
                continue
            fn = item.fn
            if not isinstance(fn, types.FunctionType):
                raise Untrusted(f"the step is a {type(fn).__name__}, not a function")
            code_object = fn.__code__
            text: str | None
            kept = _BY_CODE.get(id(code_object))
            if kept is not None and kept.code_object is code_object:
                code, text, body_imports = kept.code, kept.text, kept.body_imports
                if (
                    kept.modules is not None
                    and item.when is None
                    and item.connection_env is None
                    and _same_modules(fn, kept)
                ):
                    options = _options(item)
                    made = kept.made
                    if made is None or made.options != options:
                        helpers = dict(kept.helpers)
                        made = StaticPrint(code=code, helpers=helpers, options=options, texts={code: text})
                        _BY_CODE[id(code_object)] = kept._replace(made=made)
                    prints[name] = made
                    continue
            else:
                kept = None
                text = hasher.function_text(fn, drop_decorators=True)
                code = _sha(text if text is not None else hasher.function_source(fn, drop_decorators=True))
                segment = hasher.segment(fn)
                body_imports = segment is None or "import" in segment
            helpers = hasher.references(fn, body_imports=body_imports)
            closure = hasher.closure_values(fn, helpers)
            if closure:
                helpers[f"{name}.<closure>"] = sha(*closure)
            option_parts = [repr(item.foreach), repr(item.version)]
            if item.connection_env is not None:  # non-secret values, and only the names of secrets
                option_parts.append(repr(sorted(item.connection_env.public.items())))
                option_parts.append(repr(sorted(item.connection_env.secret)))
            if item.when is not None:
                if isinstance(item.when, types.FunctionType):
                    option_parts.append(hasher.function_source(item.when, drop_decorators=False))
                    option_parts += hasher.closure_values(item.when, helpers)
                    for key, digest in hasher.references(item.when).items():
                        helpers.setdefault(key, digest)
                else:
                    option_parts.append(hasher.digest(item.when, helpers))
            helpers, files = _split_files(hasher, helpers)
            prints[name] = StaticPrint(
                code=code,
                helpers=helpers,
                options=_sha(*option_parts),
                files=files,
                texts=_texts(hasher, text, code, helpers),
            )
            if text is not None:
                made_of = (
                    None
                    if files or closure or body_imports or len(option_parts) != 2
                    else _module_reads(hasher, fn, helpers)
                )
                if kept is None or kept.modules != made_of:
                    namespace = fn.__globals__.get("__name__")
                    _remember(
                        _ByCode(
                            code_object,
                            code,
                            text,
                            body_imports,
                            made_of,
                            dict(helpers),
                            namespace,
                            global_reads(code_object),
                            prints[name] if made_of is not None else None,
                        )
                    )
        except Untrusted as exc:
            prints[name] = StaticPrint(code="", untrusted=str(exc))
        except RecursionError:
            prints[name] = StaticPrint(code="", untrusted="its helpers nest too deeply to hash")
    return prints


def _new_step_functions(loaded: LoadedFlow) -> list[types.FunctionType]:
    """The functions of function steps whose code no load has made a print of (see `_BY_CODE`)."""
    return [
        node.step.fn
        for node in loaded.graph.nodes.values()
        if node.step.spec is None
        and node.step.job is None
        and isinstance(node.step.fn, types.FunctionType)
        and id(node.step.fn.__code__) not in _BY_CODE
    ]


def _module_reads(
    hasher: Hasher, fn: types.FunctionType, helpers: dict[str, str]
) -> tuple[tuple[str, types.ModuleType], ...] | None:
    """The globals `fn` reads, as (name, module) in name order, when every one is a whole module that
    is not the user's and each is one of `helpers` (so they are all the helpers); else None."""
    namespace = fn.__globals__
    found = []
    for read in sorted(global_reads(fn.__code__) & namespace.keys()):
        value = namespace[read]
        if not isinstance(value, types.ModuleType):
            return None
        file = str(getattr(value, "__file__", None) or "")
        if file and hasher.is_user_code_file(file):
            return None
        found.append((read, value))
    return tuple(found) if len(found) == len(helpers) else None


def _same_modules(fn: types.FunctionType, kept: _ByCode) -> bool:
    """Whether the globals `fn` reads are exactly `kept`'s modules, read from a namespace of the same
    name (none defined now when it read none)."""
    namespace = fn.__globals__
    modules = kept.modules
    assert modules is not None
    if len(kept.reads & namespace.keys()) != len(modules):
        return False
    if not modules:
        return True
    if namespace.get("__name__") != kept.namespace:
        return False
    return all(namespace.get(read) is module for read, module in modules)


def _external_print(hasher: Hasher, item: Step) -> StaticPrint:
    """A command, container or `uses:` step: its spec is hashed as `command`; the function a `uses:`
    step calls counts as a function step's code and helpers."""
    command = sha("command", value_hash(item.spec))
    function = getattr(item.fn, "function", None)
    if not isinstance(function, types.FunctionType):
        return StaticPrint(code=command, options=_sha(repr(item.version)), command=command)
    helpers, files = _split_files(hasher, hasher.references(function))
    text = hasher.function_text(function, drop_decorators=True)
    code = _sha(text if text is not None else hasher.function_source(function, drop_decorators=True))
    return StaticPrint(
        code=code,
        helpers=helpers,
        options=_sha(repr(item.version)),
        command=command,
        files=files,
        texts=_texts(hasher, text, code, helpers),
    )


def _texts(hasher: Hasher, text: str | None, code: str, helpers: dict[str, str]) -> dict[str, str]:
    """The sources behind a step's `code` (its normalised `text`) and helper hashes (see
    `StaticPrint.texts`)."""
    texts = {digest: hasher.part_texts[digest] for digest in helpers.values() if digest in hasher.part_texts}
    if text is not None:
        texts[code] = text
    return texts


def _job_print(hasher: Hasher, item: Step) -> StaticPrint:
    """A job step (`dsl.jobs`): its class counts as a function step's code (every method: what
    `start`, `status` and `result` do decides the output) and what the class references as helpers."""
    cls = getattr(item.fn, "cls", None)
    if not isinstance(cls, type):
        raise Untrusted(f"the job step's function is a {type(item.fn).__name__}, not a job")
    code, helpers = hasher.class_(cls)
    helpers, files = _split_files(hasher, dict(helpers))
    return StaticPrint(code=code, helpers=helpers, options=_sha(repr(item.version)), files=files)


def _split_files(hasher: Hasher, helpers: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The helpers proper, and the files of modules imported at run time marked among them."""
    if not hasher.files_seen:
        return helpers, {}
    files = {k.removeprefix(FILE_MARK): v for k, v in helpers.items() if k.startswith(FILE_MARK)}
    return {k: v for k, v in helpers.items() if not k.startswith(FILE_MARK)}, files
