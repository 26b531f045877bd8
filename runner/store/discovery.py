"""Provides `find_store`: which run store a command uses, found the way git finds `.git`.

`--store DIR`, else `$FLOW_STORE`, else the nearest `.flow/` holding a store from the working
directory upwards, else a new `.flow/` in the working directory. So `cd pipelines && flow run p.py`
uses the project's store instead of silently starting an empty one beside it. The answer is an
absolute path, fixed when the command starts: a step that calls `os.chdir` (in the runner with
`--executor inline`, or in a worker) must not move where results are written.
"""

from __future__ import annotations

import os
from pathlib import Path

STORE_DIR = ".flow"
STORE_DB = "flow.db"
"""A `.flow/` counts as a store only if it holds the database: another tool's `.flow` directory
higher up (or a half-created one) is not adopted."""


def find_store(explicit: str | Path | None = None) -> tuple[Path, str]:
    """The store's absolute path and how it was chosen (what `flow doctor` shows)."""
    if explicit is not None:
        return Path(os.path.abspath(explicit)), "--store"
    env = os.environ.get("FLOW_STORE")
    if env:
        return Path(os.path.abspath(env)), "$FLOW_STORE"
    here = Path(os.getcwd())
    for directory in (here, *here.parents):
        candidate = directory / STORE_DIR
        if (candidate / STORE_DB).is_file():
            how = "in the working directory" if directory == here else "found above the working directory"
            return candidate, how
    return here / STORE_DIR, "new, in the working directory"
