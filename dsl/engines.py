"""Provides `container_engine` and `image_digest`: which container CLI can run a flow's container steps.

docker or podman, whichever is installed *and usable*: a docker CLI whose daemon is down is not, and a
flow with a container step then fails to load with the reason for each engine tried, before anything
runs. `$FLOW_CONTAINER_ENGINE` picks one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from dsl.errors import FlowError

ENGINES = ("docker", "podman")
ENGINE_CHECK_TIMEOUT_S = 20.0
ENGINE_RECHECK_S = 30.0
"""A usable engine is trusted for this long; an unusable one is asked again on every load (a daemon
that is down fails in milliseconds)."""

_usable: dict[str, float] = {}


def container_engine() -> str:
    """The path of a usable container CLI: `$FLOW_CONTAINER_ENGINE`, else docker, else podman.

    Usable means its `info` succeeds: a docker CLI whose daemon is down is not.

    Raises:
        FlowError: none is usable; the message says why for each one tried.
    """
    wanted = os.environ.get("FLOW_CONTAINER_ENGINE")
    why: list[str] = []
    for name in [wanted] if wanted else ENGINES:
        path = shutil.which(name)
        if path is None:
            why.append(f"{name} is not installed")
            continue
        if time.monotonic() - _usable.get(path, -ENGINE_RECHECK_S) < ENGINE_RECHECK_S:
            return path
        try:
            probe = subprocess.run(
                [path, "info"],
                capture_output=True,
                text=True,
                timeout=ENGINE_CHECK_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            why.append(f"{name} cannot be run ({exc})")
            continue
        if probe.returncode == 0:
            _usable[path] = time.monotonic()
            return path
        detail = (probe.stderr.strip().splitlines() or ["no reason given"])[-1]
        why.append(f"{name} is installed but not usable ({detail[:200]})")
    raise FlowError("container steps need docker or podman, and none is usable: " + "; ".join(why))


def image_digest(engine: str, image: str) -> str | None:
    """The local image's content digest (its ID), or None if it is not pulled yet."""
    try:
        probe = subprocess.run(
            [engine, "image", "inspect", "--format", "{{.Id}}", image],
            capture_output=True,
            text=True,
            timeout=ENGINE_CHECK_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    digest = probe.stdout.strip()
    return digest if probe.returncode == 0 and digest else None
