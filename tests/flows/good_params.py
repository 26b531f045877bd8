"""A valid flow with typed parameters, used for -p / --params errors."""

from dsl import param, step


@step
def train(
    lr: float = param(0.1, help="learning rate"),
    epochs: int = 3,
    optimizer: str = param("sgd", choices=["sgd", "adam"]),
    verbose: bool = False,
):
    open(__file__ + ".ran", "w").write("train")
    return (lr, epochs, optimizer, verbose)


@step
def evaluate(train):
    return train
