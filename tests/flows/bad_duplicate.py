"""Two steps named `train`."""

from dsl import step


@step
def prepare():
    open(__file__ + ".ran", "w").write("prepare")
    return 1


@step
def train(prepare):
    return prepare


def other(prepare):
    return prepare * 2


train_again = step(name="train")(other)
