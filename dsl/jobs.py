"""Provides `Job` and `job`: a step whose work lives elsewhere (a training job on a cluster, a batch
job of a cloud service, a local process that outlives any one call) and that the runner starts,
polls and, on stop or timeout, kills.

    from dsl import Job, job

    @job(timeout=3600, poll=5, max_poll=60)
    class train(Job):
        def start(self, dataset, lr: float = 0.1):       # like a step function: upstream outputs, params
            return submit_training(dataset, lr)          # a handle: any picklable value (an id, a dict)

        def status(self, handle):                        # "running", "succeeded" or "failed"
            return ask_the_cluster(handle)

        def kill(self, handle):
            cancel_on_the_cluster(handle)

        def result(self, handle):                        # optional: the step's output (default: the handle)
            return download_the_model(handle)

Each method runs where steps run (a worker process), as one short task: `start` once, then `status`
every `poll` seconds, growing by half each time up to `max_poll`, with no worker held in between; once
it says `succeeded`, `result` gives the step's output (cached like any step's). The handle is stored
as soon as `start` returns, so `flow resume` of a run whose runner died re-attaches to the job instead
of starting it again. `timeout` bounds the whole job (from `start` to the end); `call_timeout` bounds
each call. On stop, on timeout, and when `status` fails (raises, answers something else, or does not
answer within `call_timeout`) the runner calls `kill`, in a process of its own, before it gives up;
a `kill` that fails is reported with the handle, so no job is left running unseen.

A new instance of the class is made for every call (`Trainer()`, no arguments): keep what the job
needs in the handle, not on `self`. `spawn` starts a local process that outlives the call that
started it, for jobs that are local processes (the `external_job` sample's trainer).
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

from dsl.errors import FlowError
from dsl.step import Step

JOB_STATUSES = ("running", "succeeded", "failed")
"""What `Job.status` may answer."""
PHASE = "__flow_job_phase__"
"""The keyword argument that tells the shipped `JobCall` which method to call (the runner sets it)."""
HANDLE = "__flow_job_handle__"
"""The keyword argument carrying the handle to `status`, `result` and `kill`."""
OUTLIVES_STEP = "FLOW_OUTLIVES_STEP"
"""Marks a process the worker must not kill when the call that started it ends (see `spawn`; the same
mark as `runner.executors.proctree`'s)."""


class Job:
    """The base class of a job step: subclass it, define `start`, `status` and `kill` (and optionally
    `result`), and decorate the class with `@job(...)`. See the module docstring."""

    def start(self, *args: Any, **inputs: Any) -> Any:
        """Start the job with the step's inputs (named like a step function's arguments); return a
        picklable handle that identifies it."""
        raise NotImplementedError(f"{type(self).__name__} must define start(self, ...)")

    def status(self, handle: Any) -> str:
        """`running`, `succeeded` or `failed`."""
        raise NotImplementedError(f"{type(self).__name__} must define status(self, handle)")

    def kill(self, handle: Any) -> None:
        """Stop the job (called on stop, on timeout, and when `status` fails)."""
        raise NotImplementedError(f"{type(self).__name__} must define kill(self, handle)")

    def result(self, handle: Any) -> Any:
        """The step's output once the job succeeded (default: the handle)."""
        return handle


@dataclass(frozen=True)
class JobOptions:
    """How the runner drives a job step.

    Attributes:
        poll: seconds before the first `status` call.
        max_poll: the longest wait between two calls (each wait is half again the one before).
        call_timeout: seconds each call of `start`, `status`, `result` or `kill` may take.
    """

    poll: float = 1.0
    max_poll: float = 30.0
    call_timeout: float = 60.0


class JobCall:
    """The function of a job step as the runner ships it: one call runs one of the job's methods.

    Attributes:
        cls: the user's `Job` subclass.
    """

    def __init__(self, cls: type) -> None:
        self.cls = cls
        start = getattr(cls, "start")  # noqa: B009 - `type` has no `start` as far as mypy knows
        signature = inspect.signature(start)
        self.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__

    def __getstate__(self) -> dict[str, Any]:
        return {"cls": self.cls}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["cls"])  # type: ignore[misc]  # rebuilds the signature where it is unpickled

    def __repr__(self) -> str:
        return f"<job {self.cls.__qualname__}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        phase = kwargs.pop(PHASE, "start")
        instance = self.cls()
        if phase == "start":
            return instance.start(*args, **kwargs)
        handle = kwargs.pop(HANDLE)
        if phase == "status":
            answer = instance.status(handle)
            if answer not in JOB_STATUSES:
                raise ValueError(f"status() returned {answer!r}; return one of {', '.join(JOB_STATUSES)}")
            return str(answer)
        if phase == "result":
            return instance.result(handle)
        if phase == "kill":
            instance.kill(handle)
            return None
        raise ValueError(f"unknown job phase {phase!r}")


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


@overload
def job(cls: type, /) -> Step: ...


@overload
def job(
    *,
    name: str | None = None,
    timeout: float | None = None,
    poll: float = 1.0,
    max_poll: float = 30.0,
    call_timeout: float = 60.0,
    retries: int = 0,
    retry_delay: float = 0.0,
    cache: bool = True,
    version: str | None = None,
    on_success: Any = None,
    on_failure: Any = None,
    on_retry: Any = None,
) -> Callable[[type], Step]: ...


def job(cls: type | None = None, /, **options: Any) -> Any:
    """Make a `Job` subclass a step (bare `@job` or `@job(timeout=..., poll=...)`).

    The step is named after the class in snake_case (`class TrainModel` -> `train_model`) unless
    `name=` says otherwise; `start`'s arguments wire it like a step function's. `timeout` bounds the
    whole job; see `JobOptions` for `poll`, `max_poll` and `call_timeout`.

    Raises:
        FlowError: not a class with `start`, `status` and `kill`, or a bad option (names file and line).
    """
    if cls is not None:
        return _job_step(cls, options)
    return lambda decorated: _job_step(decorated, options)


def _job_step(cls: Any, options: dict[str, Any]) -> Step:
    file, line = _where(cls)
    if not isinstance(cls, type):
        raise FlowError(f"@job decorates a class (a Job subclass), got {cls!r}", file=file, line=line)
    name = options.pop("name", None) or _snake(cls.__name__)

    def bad(message: str) -> FlowError:
        return FlowError(message, file=file, line=line, step=name)

    missing = [m for m in ("start", "status", "kill") if getattr(cls, m, None) in (None, getattr(Job, m))]
    if missing:
        raise bad(f"the job class must define {', '.join(f'{m}(self, ...)' for m in missing)}")
    timings = {key: options.pop(key, default) for key, default in vars(JobOptions()).items()}
    for key, value in timings.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            raise bad(f"{key} must be a number of seconds > 0, got {value!r}")
    unknown = set(options) - {"timeout", "retries", "retry_delay", "cache", "version"} - _HOOKS
    if unknown:
        raise bad(f"@job got unknown option(s) {', '.join(sorted(unknown))}")
    try:
        call = JobCall(cls)
    except (TypeError, ValueError) as exc:
        raise bad(f"cannot read start()'s signature: {exc}") from None
    item = Step(call, name=name, **options)
    item.file, item.line = file, line
    item.job = JobOptions(**{k: float(v) for k, v in timings.items()})
    return item


_HOOKS = {"on_success", "on_failure", "on_retry"}


def _where(cls: Any) -> tuple[str, int]:
    start = getattr(cls, "__dict__", {}).get("start")
    code = getattr(start, "__code__", None)
    if code is not None:
        return code.co_filename, code.co_firstlineno
    try:
        return inspect.getsourcefile(cls) or "<unknown>", inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):
        return "<unknown>", 0


def spawn(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    log: str | None = None,
) -> int:
    """Start a local process that outlives the call that started it (a job's `start`); return its pid.

    It runs in a session of its own, with stdin closed and stdout/stderr appended to `log` (or
    discarded), marked so the worker does not kill it when the call ends. Nothing waits for it: the
    job's `status` finds out how it is doing (e.g. from a file it writes), its `kill` ends it
    (`os.killpg(pid, signal.SIGTERM)`).
    """
    output = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    try:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env={**(env if env is not None else os.environ), OUTLIVES_STEP: "1"},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
    finally:
        if log is not None and not isinstance(output, int):
            output.close()
    return process.pid


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, one that exited but is not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
