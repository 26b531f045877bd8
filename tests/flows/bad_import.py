"""Imports a module that does not exist."""

from dsl import step

import no_such_module_for_flow_tests  # noqa: F401


@step
def never():
    return 1
