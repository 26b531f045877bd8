"""A cycle through three steps: a >> b >> c >> a."""

from dsl import step


@step
def a():
    open(__file__ + ".ran", "w").write("a")
    return 1


@step
def b():
    return 2


@step
def c():
    return 3


a >> b >> c
c >> a
