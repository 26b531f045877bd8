"""ml_pipeline: collect data, train a logistic regression, evaluate it on held-out rows.

The model is plain Python (no numpy) so the flow runs anywhere in about a second:

    flow run sample_flows/ml_pipeline.py
    flow run sample_flows/ml_pipeline.py -p lr=0.1 -p epochs=500
"""

import math
import random

from dsl import Flow, log_metric, param, step

flow = Flow(
    "ml_pipeline",
    description="Simulate customer churn, train a logistic regression, evaluate on a test split.",
)

FEATURES = ("tenure_months", "monthly_spend", "support_tickets")
SEED = param(7, help="random seed for data generation and the train/test shuffle")


def sigmoid(z: float) -> float:
    """Numerically safe logistic function."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def dot(weights: list[float], x: list[float]) -> float:
    """Inner product of two equally long vectors."""
    return sum(w * v for w, v in zip(weights, x, strict=True))


def predict_proba(model: dict, row: dict[str, float]) -> float:
    """Churn probability of one row under a trained model (standardizes with the model's scaler)."""
    z = model["bias"]
    for name, w in zip(model["features"], model["weights"], strict=True):
        z += w * (row[name] - model["mean"][name]) / model["std"][name]
    return sigmoid(z)


@step
def collect_data(
    rows: int = param(400, help="number of customers to simulate"),
    seed: int = SEED,
) -> list[dict[str, float]]:
    """Simulate customers; churn is more likely with short tenure, high spend and many tickets."""
    rng = random.Random(seed)
    data = []
    for _ in range(rows):
        tenure = rng.uniform(0, 72)
        spend = rng.uniform(20, 120)
        tickets = min(8, int(rng.expovariate(0.6)))
        logit = -0.5 - 0.12 * tenure + 0.04 * spend + 0.9 * tickets
        churned = 1 if rng.random() < sigmoid(logit) else 0
        data.append(
            {
                "tenure_months": round(tenure, 1),
                "monthly_spend": round(spend, 2),
                "support_tickets": float(tickets),
                "churned": churned,
            }
        )
    churn_rate = sum(r["churned"] for r in data) / max(1, len(data))
    print(f"collected {len(data)} customers, churn rate {churn_rate:.2f}")
    return data


@step
def split_data(
    collect_data: list[dict[str, float]],
    test_fraction: float = param(0.25, help="share of rows held out for evaluation"),
    seed: int = SEED,
) -> dict[str, list[dict[str, float]]]:
    """Shuffle the rows and hold out `test_fraction` of them for evaluation."""
    rows = list(collect_data)
    random.Random(seed).shuffle(rows)
    cut = int(len(rows) * (1.0 - test_fraction))
    print(f"train rows: {cut}, test rows: {len(rows) - cut}")
    return {"train": rows[:cut], "test": rows[cut:]}


@step
def train(
    split_data: dict[str, list[dict[str, float]]],
    lr: float = param(0.5, help="learning rate of gradient descent"),
    epochs: int = param(200, help="number of full-batch gradient descent passes"),
) -> dict:
    """Fit a standardized logistic regression with full-batch gradient descent."""
    rows = split_data["train"]
    n = len(rows)
    mean = {f: sum(r[f] for r in rows) / n for f in FEATURES}
    std = {f: math.sqrt(sum((r[f] - mean[f]) ** 2 for r in rows) / n) or 1.0 for f in FEATURES}
    xs = [[(r[f] - mean[f]) / std[f] for f in FEATURES] for r in rows]
    ys = [r["churned"] for r in rows]

    weights = [0.0] * len(FEATURES)
    bias = 0.0
    loss = float("nan")
    for epoch in range(1, epochs + 1):
        grad_w = [0.0] * len(FEATURES)
        grad_b = 0.0
        loss = 0.0
        for x, y in zip(xs, ys, strict=True):
            p = sigmoid(bias + dot(weights, x))
            err = p - y
            for j, v in enumerate(x):
                grad_w[j] += err * v
            grad_b += err
            loss -= math.log(max(p, 1e-12)) if y else math.log(max(1.0 - p, 1e-12))
        weights = [w - lr * g / n for w, g in zip(weights, grad_w, strict=True)]
        bias -= lr * grad_b / n
        loss /= n
        if epoch % 50 == 0 or epoch == 1:
            print(f"epoch {epoch:4d}  loss {loss:.4f}")
    log_metric("train_loss", loss)
    return {
        "features": list(FEATURES),
        "weights": weights,
        "bias": bias,
        "mean": mean,
        "std": std,
        "train_loss": loss,
    }


@step
def evaluate(train: dict, split_data: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    """Score the model on the held-out rows: accuracy, precision and recall of the churn class."""
    tp = fp = tn = fn = 0
    for row in split_data["test"]:
        predicted = predict_proba(train, row) >= 0.5
        actual = row["churned"] == 1
        tp += predicted and actual
        fp += predicted and not actual
        tn += not predicted and not actual
        fn += not predicted and actual
    total = max(1, tp + fp + tn + fn)
    result = {
        "accuracy": (tp + tn) / total,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "test_rows": tp + fp + tn + fn,
    }
    for name in ("accuracy", "precision", "recall"):
        log_metric(name, result[name])
    print(
        f"accuracy {result['accuracy']:.3f}  precision {result['precision']:.3f}  "
        f"recall {result['recall']:.3f}"
    )
    return result


collect_data >> split_data >> train >> evaluate
