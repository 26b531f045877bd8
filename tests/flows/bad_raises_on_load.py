"""Raises while the module executes (not an import error)."""

from dsl import step


@step
def s():
    return 1


CONFIG = {"a": 1}["b"]
