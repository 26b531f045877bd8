"""Function steps and a command step in one Python flow, with flow outputs.

`command(...)` makes a step that runs a program: its declared outputs are the files it writes to
$FLOW_OUTPUTS, and a function step receives them (a dict) by naming it as an argument.
"""

from dsl import Flow, command, step


@step
def numbers(count: int = 10):
    return list(range(count))


summarise = command(
    "summarise",
    ["python3", "pipeline/summarise.py"],
    inputs={"numbers": numbers},  # FLOW_INPUT_NUMBERS: the output of `numbers`, as text
    outputs=["total"],
    timeout=60,
)


@step
def report(summarise, numbers):
    total = int(summarise["total"])
    print(f"total {total} of {len(numbers)} numbers")
    return {"total": total, "mean": total / len(numbers)}


flow = Flow(
    "mixed_steps",
    description="A function, a command and a function",
    outputs={
        "total": (report, "total"),
        "mean": (report, "mean"),
    },
)
