"""Provides what a flow declares about how it is operated: durations, hook lists, built-in hooks.

`Flow(..., every="30s", loop=True, on_failure=...)` and `@step(on_retry=...)` validate their values
here, at load time, so a typo is a `FlowError` naming the file and line before anything runs. The
cron expression itself is checked by the runner (it needs the cron library; `dsl` is stdlib only).

The built-in hooks `run_command` and `post_json` are plain callables like any user hook: the runner
calls every hook with one argument, the run's details (a JSON-able dict, see README "Hooks"), in a
separate, time-limited process.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number of seconds or a text like `30s`, `5m`, `1h30m`, `1d`, `250ms`.

    Raises:
        ValueError: not a duration, or not above zero (the message says what is accepted).
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if not text:
            raise ValueError("a duration must not be empty (use e.g. 30s, 5m, 1h30m)")
        try:
            seconds = float(text)
        except ValueError:
            position, seconds = 0, 0.0
            for match in _DURATION.finditer(text):
                if text[position : match.start()].strip():
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                position = match.end()
            if position == 0 or text[position:].strip():
                raise ValueError(
                    f"{value!r} is not a duration (use seconds or e.g. 30s, 5m, 1h30m, 1d)"
                ) from None
    else:
        raise ValueError(f"a duration must be seconds or a text like '30s', got {value!r}")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"a duration must be above zero, got {value!r}")
    return seconds


def hook_list(value: Any, option: str) -> tuple[Callable[..., Any], ...]:
    """A hook option's value as a tuple of callables (None, one callable, or a list of them).

    Raises:
        ValueError: an item is not callable.
    """
    if value is None:
        return ()
    items = [value] if callable(value) else value
    try:
        hooks = tuple(items)
    except TypeError:
        raise ValueError(f"{option}= must be a function or a list of functions, got {value!r}") from None
    for hook in hooks:
        if not callable(hook):
            raise ValueError(f"{option}= must be a function or a list of functions, got {hook!r}")
    return hooks


def _hook_environment(details: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    env["FLOW_RUN_ID"] = str(details.get("run_id", ""))
    env["FLOW_NAME"] = str(details.get("flow", ""))
    env["FLOW_STATUS"] = str(details.get("status", ""))
    env["FLOW_HOOK"] = str(details.get("hook", ""))
    env["FLOW_STEP"] = str(details.get("step") or "")
    return env


class run_command:  # noqa: N801 - used like a function: on_failure=run_command("notify-send ...")
    """A hook that runs a command with the run's details as JSON on its stdin.

    The command gets `FLOW_RUN_ID`, `FLOW_NAME`, `FLOW_STATUS`, `FLOW_HOOK` (success, failure,
    retry) and `FLOW_STEP` in its environment. A non-zero exit is a failed hook (reported; the run
    is not affected).

    Args:
        command: an argument list, or a command line split like a shell would (no shell runs it).
    """

    def __init__(self, command: str | Sequence[str]) -> None:
        argv = shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
        if not argv:
            raise ValueError("run_command needs a command")
        self.argv = argv

    def __call__(self, details: dict[str, Any]) -> None:
        done = subprocess.run(
            self.argv,
            input=json.dumps(details, default=repr),
            text=True,
            env=_hook_environment(details),
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(self.argv)} exited with {done.returncode}")

    def __repr__(self) -> str:
        return f"run_command({shlex.join(self.argv)!r})"


class post_json:  # noqa: N801 - used like a function: on_failure=post_json(url_env="TEAM_HOOK")
    """A hook that POSTs the run's details as JSON to a URL (a chat webhook, an alerting service).

    The URL and the bearer token are read from environment variables when the hook runs, so a
    secret never sits in the flow file or the store.

    Args:
        url: the URL, if it is not secret.
        url_env: the environment variable holding the URL (used when `url` is not given).
        token_env: the environment variable holding a token, sent as `Authorization: Bearer ...`.
        timeout: seconds for the request (the hook's own time limit still applies).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        url_env: str | None = None,
        token_env: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if (url is None) == (url_env is None):
            raise ValueError("post_json needs exactly one of url= and url_env=")
        self.url = url
        self.url_env = url_env
        self.token_env = token_env
        self.timeout = timeout

    def __call__(self, details: dict[str, Any]) -> None:
        url = self.url or os.environ.get(self.url_env or "")
        if not url:
            raise RuntimeError(f"${self.url_env} is not set: the notification was not sent")
        if not url.startswith(("http://", "https://")):
            raise RuntimeError(f"post_json only sends to http(s) URLs, got {url[:40]!r}")
        headers = {"Content-Type": "application/json", "User-Agent": "flow-hook"}
        if self.token_env:
            token = os.environ.get(self.token_env)
            if not token:
                raise RuntimeError(f"${self.token_env} is not set: the notification was not sent")
            headers["Authorization"] = f"Bearer {token}"
        import urllib.request  # here: it costs `flow` ~20 ms at start-up, and only this hook needs it

        body = json.dumps(details, default=repr).encode()
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - http(s) only
            if response.status >= 300:
                raise RuntimeError(f"POST {url} answered {response.status}")

    def __repr__(self) -> str:
        target = self.url or f"${self.url_env}"
        return f"post_json({target})"
