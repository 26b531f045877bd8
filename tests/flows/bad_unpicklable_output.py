"""`make_lock` returns a threading.Lock, which cannot be pickled."""

import threading

from dsl import step


@step
def make_lock():
    return threading.Lock()


@step
def fine():
    return "ok"
