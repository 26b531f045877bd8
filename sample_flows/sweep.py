"""sweep: a hyperparameter grid search with a fan-out step.

`train_one` uses `foreach="grid"`: it runs once per configuration (each cached on its own, so
adding a configuration to the grid only trains the new one), and `pick_best` receives the ordered
list of results.

    flow run sample_flows/sweep.py
    flow run sample_flows/sweep.py -p epochs=20
"""

import math
import random

from dsl import Flow, log_metric, param, step

flow = Flow(
    "sweep",
    description="Grid search over learning rate and L2 penalty for a logistic regression.",
)

LEARNING_RATES = (0.01, 0.1, 0.5)
L2_PENALTIES = (0.0, 0.01)


def sigmoid(z: float) -> float:
    """Numerically safe logistic function."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def dot(weights: list[float], x: list[float]) -> float:
    """Inner product of two equally long vectors."""
    return sum(w * v for w, v in zip(weights, x, strict=True))


@step
def dataset(
    rows: int = param(300, help="number of examples (2/3 train, 1/3 validation)"),
    seed: int = param(7, help="random seed"),
) -> dict[str, list[list[float]]]:
    """Two overlapping Gaussian classes in 5 dimensions, only 2 of which carry signal."""
    rng = random.Random(seed)
    xs, ys = [], []
    for i in range(rows):
        label = i % 2
        center = (1.0, -0.8, 0.0, 0.0, 0.0) if label else (-0.2, 0.4, 0.0, 0.0, 0.0)
        xs.append([rng.gauss(c, 1.0) for c in center])
        ys.append(label)
    cut = rows * 2 // 3
    print(f"dataset: {cut} train rows, {rows - cut} validation rows, {len(xs[0])} features")
    return {"x_train": xs[:cut], "y_train": ys[:cut], "x_valid": xs[cut:], "y_valid": ys[cut:]}


@step
def grid() -> list[dict[str, float]]:
    """Every combination of learning rate and L2 penalty to try."""
    configs = [{"lr": lr, "l2": l2} for lr in LEARNING_RATES for l2 in L2_PENALTIES]
    print(f"{len(configs)} configurations")
    return configs


@step(foreach="grid")
def train_one(
    grid: dict[str, float],
    dataset: dict[str, list[list[float]]],
    epochs: int = param(100, help="gradient descent passes per configuration"),
) -> dict:
    """Train one logistic regression with this configuration and score it on the validation rows."""
    lr, l2 = grid["lr"], grid["l2"]
    xs, ys = dataset["x_train"], dataset["y_train"]
    n, d = len(xs), len(xs[0])
    weights, bias = [0.0] * d, 0.0
    for _ in range(epochs):
        grad_w, grad_b = [0.0] * d, 0.0
        for x, y in zip(xs, ys, strict=True):
            err = sigmoid(bias + dot(weights, x)) - y
            for j in range(d):
                grad_w[j] += err * x[j]
            grad_b += err
        weights = [w - lr * (g / n + l2 * w) for w, g in zip(weights, grad_w, strict=True)]
        bias -= lr * grad_b / n
    correct = sum(
        (bias + dot(weights, x) >= 0) == (y == 1)
        for x, y in zip(dataset["x_valid"], dataset["y_valid"], strict=True)
    )
    accuracy = correct / len(dataset["y_valid"])
    log_metric("accuracy", accuracy)
    print(f"lr={lr:<5} l2={l2:<5} validation accuracy {accuracy:.3f}")
    return {"config": grid, "accuracy": accuracy, "weights": weights, "bias": bias}


@step
def pick_best(train_one: list[dict]) -> dict:
    """Keep the configuration with the best validation accuracy (the first one on a tie)."""
    best = max(train_one, key=lambda result: result["accuracy"])
    log_metric("best_accuracy", best["accuracy"])
    for result in train_one:
        marker = " <- best" if result is best else ""
        print(f"{result['config']}  accuracy {result['accuracy']:.3f}{marker}")
    return {"config": best["config"], "accuracy": best["accuracy"], "tried": len(train_one)}


[dataset, grid] >> train_one >> pick_best
