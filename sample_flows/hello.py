"""hello: the smallest flow, two steps.

`shout` receives `greet`'s output because its argument is named `greet`; `name` is a flow parameter
because it has a default. Run it with:

    flow run sample_flows/hello.py
    flow run sample_flows/hello.py -p name=flow
"""

from dsl import step


@step
def greet(name: str = "world") -> str:
    """Build the greeting for `name`."""
    return f"hello, {name}"


@step
def shout(greet: str) -> str:
    """Shout the greeting from the upstream step."""
    loud = greet.upper() + "!"
    print(loud)
    return loud
