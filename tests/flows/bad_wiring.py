"""`>>` with something that is not a step."""

from dsl import step


@step
def a():
    return 1


a >> "b"
