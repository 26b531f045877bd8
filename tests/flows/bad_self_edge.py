"""A step wired after itself."""

from dsl import step


@step
def loop():
    return 1


loop >> loop
