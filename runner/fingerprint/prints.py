"""Provides `StaticPrint` and `static_prints`: the parts of every step's fingerprint known once the
flow has loaded (code, helpers, options, command, files imported at run time).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

from dsl.gcpause import gc_paused
from dsl.loader import LoadedFlow
from dsl.step import Step
from runner.fingerprint.bytecode import global_reads
from runner.fingerprint.hasher import FILE_MARK, Hasher
from runner.fingerprint.source import code_span
from runner.fingerprint.textcache import kept_texts
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
        )

    @cached_property
    def fixed_text(self) -> tuple[str, str]:
        """This print's parts of the fingerprint's text (`runner.fingerprint.combine`), each followed by
        a NUL: those before a fan-out item (code, options) and after it (command, helpers). Joined once
        per load, not once per step and run: they were a third of a fully cached step's fingerprinting."""
        before = f"{self.code}\0{self.options}\0"
        command = f"c:{self.command}\0" if self.command else ""
        return before, command + "".join([f"h:{k}={v}\0" for k, v in sorted(self.helpers.items())])


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


_PLAIN: dict[int, tuple[types.CodeType, str, str]] = {}
"""id of a step function's code -> (that code, the hash of its normalised source, that source), for a
function whose print is made of its source and options alone: no helper (no global it reads is
defined, nothing captured, nothing imported in its body: each of those is a helper), no `when=` or
connection. Its next load's print is then made at once, as long as that still holds.

Keyed by identity (the code is held, so the id stays its own), never by equality: equal code objects
may come from different texts (an annotation or a default value is compiled into the code around
the function, not into the function's). The same code object is the same text: a load executes the
code the last load compiled for each part of the flow file it did not compile again
(`dsl.flowcode`), and anything else is compiled anew. What may change while the code stays the same
is asked at every load: whether a global it reads is defined now (a helper added below it), and a
`when=` or connection given by a `step(...)` call elsewhere in the file. A function with a closure or
an import has helpers, so its code is never kept here: what it captured, and the files of what it
imports, are hashed again at every load."""
_PLAIN_SIZE = 20_000


def _remember_plain(code_object: types.CodeType, code: str, text: str) -> None:
    if len(_PLAIN) >= _PLAIN_SIZE:
        _PLAIN.clear()
    _PLAIN[id(code_object)] = (code_object, code, text)


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
            plain = _PLAIN.get(id(code_object))
            if (
                plain is not None
                and plain[0] is code_object
                and item.when is None
                and item.connection_env is None
                and not any(read in fn.__globals__ for read in global_reads(code_object))
            ):
                prints[name] = StaticPrint(
                    code=plain[1],
                    options=_sha(repr(item.foreach), repr(item.version)),
                    texts={plain[1]: plain[2]},
                )
                continue
            text = hasher.function_text(fn, drop_decorators=True)
            code = _sha(text if text is not None else hasher.function_source(fn, drop_decorators=True))
            helpers = hasher.references(fn)
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
            if not helpers and not files and len(option_parts) == 2 and text is not None:
                _remember_plain(code_object, code, text)
        except Untrusted as exc:
            prints[name] = StaticPrint(code="", untrusted=str(exc))
        except RecursionError:
            prints[name] = StaticPrint(code="", untrusted="its helpers nest too deeply to hash")
    return prints


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
