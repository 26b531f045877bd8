"""Imports a module that does not exist."""

import no_such_module_for_flow_tests  # noqa: F401
from dsl import step


@step
def never():
    return 1
