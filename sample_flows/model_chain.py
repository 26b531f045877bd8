"""model_chain: one model's output is the next model's input.

Model 1 is k-means clustering, learned without labels on the raw points. Model 2 is a logistic
regression trained on model 1's features (how close each point is to each cluster). The labels
follow an XOR pattern, so a linear model on the raw coordinates cannot do better than chance;
`train_baseline` runs alongside to show it.

    load_raw ─┬─ fit_kmeans ── featurize ── train_classifier ─┬─ evaluate
              └─────────────── train_baseline ────────────────┘

    flow run sample_flows/model_chain.py
    flow run sample_flows/model_chain.py -p k=2      # too few clusters: the chain loses its edge
"""

import math
import random

from dsl import Flow, log_metric, param, step

flow = Flow(
    "model_chain",
    description="k-means cluster features (model 1) feed a logistic regression (model 2).",
)

SEED = param(7, help="random seed for the data and the k-means initialisation")
EPOCHS = param(150, help="gradient descent passes of each logistic regression")
LR = param(0.5, help="learning rate of each logistic regression")
CORNERS = ((0.0, 0.0, 0), (4.0, 4.0, 0), (0.0, 4.0, 1), (4.0, 0.0, 1))


def sigmoid(z: float) -> float:
    """Numerically safe logistic function."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def dot(weights: list[float], x: list[float]) -> float:
    """Inner product of two equally long vectors."""
    return sum(w * v for w, v in zip(weights, x, strict=True))


def fit_logistic(xs: list[list[float]], ys: list[int], lr: float, epochs: int) -> dict:
    """Full-batch gradient descent for a logistic regression; returns weights, bias and loss."""
    n, d = len(xs), len(xs[0])
    weights, bias, loss = [0.0] * d, 0.0, float("nan")
    for _ in range(epochs):
        grad_w, grad_b, loss = [0.0] * d, 0.0, 0.0
        for x, y in zip(xs, ys, strict=True):
            p = sigmoid(bias + dot(weights, x))
            for j in range(d):
                grad_w[j] += (p - y) * x[j]
            grad_b += p - y
            loss -= math.log(max(p if y else 1.0 - p, 1e-12))
        weights = [w - lr * g / n for w, g in zip(weights, grad_w, strict=True)]
        bias -= lr * grad_b / n
        loss /= n
    return {"weights": weights, "bias": bias, "loss": loss}


def accuracy(model: dict, xs: list[list[float]], ys: list[int]) -> float:
    """Share of rows where the logistic regression's decision matches the label."""
    hits = sum(
        (model["bias"] + dot(model["weights"], x) >= 0) == (y == 1) for x, y in zip(xs, ys, strict=True)
    )
    return hits / len(ys)


def mean_point(points: list[list[float]]) -> list[float]:
    """Component-wise mean of a non-empty list of points."""
    return [sum(column) / len(points) for column in zip(*points, strict=True)]


def standardize(xs: list[list[float]], reference: list[list[float]]) -> list[list[float]]:
    """Scale each column of `xs` by the mean and standard deviation of `reference`."""
    columns = list(zip(*reference, strict=True))
    means = [sum(c) / len(c) for c in columns]
    stds = []
    for column, mean in zip(columns, means, strict=True):
        stds.append(math.sqrt(sum((v - mean) ** 2 for v in column) / len(column)) or 1.0)
    return [[(v - m) / s for v, m, s in zip(x, means, stds, strict=True)] for x in xs]


@step
def load_raw(
    rows: int = param(400, help="number of points (3/4 train, 1/4 test)"),
    seed: int = SEED,
) -> dict[str, list]:
    """Points around four corners of a square; opposite corners share a label (XOR)."""
    rng = random.Random(seed)
    points, labels = [], []
    for i in range(rows):
        cx, cy, label = CORNERS[i % 4]
        points.append([rng.gauss(cx, 0.8), rng.gauss(cy, 0.8)])
        labels.append(label)
    cut = rows * 3 // 4
    print(f"{cut} train points, {rows - cut} test points, label share {sum(labels) / rows:.2f}")
    return {
        "x_train": points[:cut],
        "y_train": labels[:cut],
        "x_test": points[cut:],
        "y_test": labels[cut:],
    }


@step
def fit_kmeans(
    load_raw: dict[str, list],
    k: int = param(4, help="number of clusters (model 1)"),
    seed: int = SEED,
    iterations: int = param(20, help="maximum k-means iterations"),
) -> dict:
    """Model 1: k-means (k-means++ initialisation) on the training points, ignoring the labels."""
    points = load_raw["x_train"]
    rng = random.Random(seed)
    centroids = [list(rng.choice(points))]
    while len(centroids) < k:
        weights = [min(math.dist(p, c) ** 2 for c in centroids) for p in points]
        centroids.append(list(rng.choices(points, weights=weights)[0]))
    inertia, used = 0.0, 0
    while used < max(1, iterations):
        used += 1
        members: list[list[list[float]]] = [[] for _ in centroids]
        inertia = 0.0
        for p in points:
            distances = [math.dist(p, c) for c in centroids]
            nearest = distances.index(min(distances))
            members[nearest].append(p)
            inertia += distances[nearest] ** 2
        # move each centroid to the mean of its members (an empty cluster keeps its centroid)
        moved = [mean_point(m) if m else c for m, c in zip(members, centroids, strict=True)]
        if moved == centroids:
            break
        centroids = moved
    log_metric("kmeans_inertia", inertia)
    print(f"k-means stopped after {used} iterations, inertia {inertia:.1f}")
    for c in centroids:
        print(f"  centroid ({c[0]:.2f}, {c[1]:.2f})")
    spread = math.sqrt(inertia / len(points)) or 1.0
    return {"centroids": centroids, "bandwidth": spread, "inertia": inertia}


@step
def featurize(load_raw: dict[str, list], fit_kmeans: dict) -> dict[str, list]:
    """Transform every point with model 1: its RBF similarity to each cluster centre."""

    def transform(p: list[float]) -> list[float]:
        width = 2 * fit_kmeans["bandwidth"] ** 2
        return [math.exp(-(math.dist(p, c) ** 2) / width) for c in fit_kmeans["centroids"]]

    features = {
        "x_train": [transform(p) for p in load_raw["x_train"]],
        "x_test": [transform(p) for p in load_raw["x_test"]],
        "y_train": load_raw["y_train"],
        "y_test": load_raw["y_test"],
    }
    print(f"{len(features['x_train'][0])} cluster features per point")
    return features


@step
def train_classifier(featurize: dict[str, list], lr: float = LR, epochs: int = EPOCHS) -> dict:
    """Model 2: logistic regression on the cluster features produced by model 1."""
    xs = standardize(featurize["x_train"], featurize["x_train"])
    model = fit_logistic(xs, featurize["y_train"], lr, epochs)
    log_metric("classifier_train_loss", model["loss"])
    print(f"classifier trained, final loss {model['loss']:.4f}")
    return model


@step
def train_baseline(load_raw: dict[str, list], lr: float = LR, epochs: int = EPOCHS) -> dict:
    """For comparison: the same logistic regression on the raw coordinates."""
    xs = standardize(load_raw["x_train"], load_raw["x_train"])
    model = fit_logistic(xs, load_raw["y_train"], lr, epochs)
    log_metric("baseline_train_loss", model["loss"])
    print(f"baseline trained, final loss {model['loss']:.4f}")
    return model


@step
def evaluate(
    train_classifier: dict,
    train_baseline: dict,
    featurize: dict[str, list],
    load_raw: dict[str, list],
) -> dict[str, float]:
    """Test accuracy of the chained model against the raw-feature baseline."""
    chained = accuracy(
        train_classifier,
        standardize(featurize["x_test"], featurize["x_train"]),
        featurize["y_test"],
    )
    baseline = accuracy(
        train_baseline,
        standardize(load_raw["x_test"], load_raw["x_train"]),
        load_raw["y_test"],
    )
    log_metric("accuracy", chained)
    log_metric("baseline_accuracy", baseline)
    print(f"test accuracy: k-means + logistic {chained:.3f}, raw logistic {baseline:.3f}")
    return {"accuracy": chained, "baseline_accuracy": baseline}


load_raw >> fit_kmeans >> featurize >> train_classifier >> evaluate
load_raw >> train_baseline >> evaluate
