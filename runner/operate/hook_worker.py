"""Provides the hook process: `python -m runner.operate.hook_worker` calls one hook and exits.

The runner writes a pickled `{"hook": ..., "details": ...}` to stdin (the hook pickled by value, as step code
is). Exit 0: the hook returned. Exit 1: it raised; the traceback is on stderr and its last line is
what the runner reports. The process runs in its own session, so the runner can stop a hook that
hangs together with anything it started.
"""

from __future__ import annotations

import pickle
import sys
import traceback


def main() -> int:
    """Read the pickled hook and its details from stdin and call it."""
    try:
        payload = pickle.loads(sys.stdin.buffer.read())
        hook, details = payload["hook"], payload["details"]
    except Exception as exc:
        print(f"cannot unpickle the hook: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    try:
        hook(details)
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
