"""Provides `run_as_batch`: the calling thread becomes a batch thread (Linux's `SCHED_BATCH`).

A batch thread keeps its fair share of the CPU, but when it wakes it no longer preempts the thread
running where it wakes. flow gives that policy to the threads that wake often for short work
beside the runner's scheduler, on machines with few cores: the worker processes (a frame from the
runner woke a worker on the runner's core, mid-cycle) and the store's writer thread (a commit took
the scheduler's core for 1-2 ms while the other sat idle). Each call site says what it measured.

The policy is a thread's, inherited by the threads and processes it starts afterwards. A thread
the user started under another policy (`chrt --idle`, a real-time one) keeps it: flow only moves
the default one. Elsewhere (another OS, a policy refused) nothing changes.
"""

from __future__ import annotations

import os


def run_as_batch() -> None:
    """Move the calling thread from the default policy to `SCHED_BATCH` (see the module)."""
    batch = getattr(os, "SCHED_BATCH", None)
    try:
        if batch is not None and os.sched_getscheduler(0) == os.SCHED_OTHER:
            os.sched_setscheduler(0, batch, os.sched_param(0))
    except OSError:
        pass
