"""A syntax error on line 8."""

from dsl import step


@step
def broken():
    return (1 +
