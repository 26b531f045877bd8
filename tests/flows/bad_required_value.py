"""`dataset` is a required parameter (param() without a default)."""

from dsl import param, step


@step
def load(dataset: str = param(help="which dataset")):
    return dataset
