"""quality_gated: a pipeline with two quality gates and a fallback branch.

    initiation ─┬─ fetch_embedding ─┬─ check_data_quality ── train ── check_model_quality ── release
                └─ build_dataset ───┘          │                              │
                                               └────────── notify_data_team ──┘

Good data trains a model; a qualified model is released. Bad data (train and everything after it is
skipped) or a model below `min_accuracy` notifies the data team instead: `notify_data_team` writes
the message, and its `on_success` hook POSTs the run's details (with that message) to the team's
webhook, `$DATA_TEAM_WEBHOOK` (when it is not set, the hook reports that nothing was sent).

    flow run sample_flows/quality_gated.py                       # good path: release
    flow run sample_flows/quality_gated.py -p noise=0.5          # bad data: notify_data_team
    flow run sample_flows/quality_gated.py -p min_accuracy=0.99  # bad model: notify_data_team
"""

import hashlib
import math
import random

from dsl import Flow, log_metric, param, post_json, step

flow = Flow(
    "quality_gated",
    description="Review classifier gated on data and model quality; failures notify the data team.",
)

POSITIVE = ("great", "love", "excellent", "perfect", "fast", "sturdy", "recommend", "happy")
NEGATIVE = ("broken", "refund", "awful", "slow", "cheap", "return", "disappointed", "late")
NEUTRAL = ("the", "box", "delivery", "product", "color", "size", "price", "order", "it", "was")
DIM = 8
MAX_BAD_FRACTION = 0.3
MIN_USABLE_ROWS = 20


def mean_vector(vectors: list[list[float]]) -> list[float]:
    """Component-wise mean of equally long vectors."""
    return [sum(column) / len(vectors) for column in zip(*vectors, strict=True)]


def embed(tokens: list[str], table: dict[str, list[float]]) -> list[float]:
    """A review's embedding: the mean of its tokens' vectors."""
    return mean_vector([table[t] for t in tokens])


def is_corrupted(row: dict, table: dict[str, list[float]]) -> bool:
    """A row is unusable without a label, without tokens, or with tokens missing from the table."""
    return row["label"] is None or not row["tokens"] or any(t not in table for t in row["tokens"])


@step
def initiation(seed: int = param(7, help="random seed for embeddings and reviews")) -> dict:
    """Fix what this run is about: the vocabulary, embedding size and seed every branch uses."""
    run = {"seed": seed, "dim": DIM, "vocabulary": sorted(POSITIVE + NEGATIVE + NEUTRAL)}
    print(f"run seed={seed}, vocabulary of {len(run['vocabulary'])} tokens, {DIM}-d embeddings")
    return run


@step(retries=2, retry_delay=0.5, timeout=30)
def fetch_embedding(initiation: dict) -> dict[str, list[float]]:
    """'Download' a pretrained embedding table (synthetic: sentiment words lean along one axis)."""
    rng = random.Random(initiation["seed"])
    table = {}
    for token in initiation["vocabulary"]:
        lean = 1.0 if token in POSITIVE else -1.0 if token in NEGATIVE else 0.0
        vector = [rng.gauss(0.0, 0.5) for _ in range(initiation["dim"])]
        vector[0] += 1.5 * lean
        table[token] = [round(v, 4) for v in vector]
    print(f"fetched {len(table)} embeddings")
    return table


@step
def build_dataset(
    initiation: dict,
    rows: int = param(300, help="number of labelled reviews"),
    noise: float = param(0.1, help="fraction of corrupted rows"),
) -> list[dict]:
    """Generate labelled reviews, corrupt a `noise` fraction of them, and mark a 20% test split."""
    rng = random.Random(initiation["seed"] + 1)
    data = []
    for i in range(rows):
        label = i % 2
        own = POSITIVE if label else NEGATIVE
        other = NEGATIVE if label else POSITIVE
        tokens = rng.choices(own, k=2) + rng.choices(NEUTRAL, k=3)
        if rng.random() < 0.3:  # real reviews are mixed: "fast delivery but broken"
            tokens.append(rng.choice(other))
        rng.shuffle(tokens)
        data.append({"tokens": tokens, "label": label, "split": "test" if i % 5 == 0 else "train"})
    for i in rng.sample(range(rows), round(noise * rows)):
        kind = rng.choice(("label", "tokens", "unknown"))
        if kind == "label":
            data[i]["label"] = None
        elif kind == "tokens":
            data[i]["tokens"] = []
        else:
            data[i]["tokens"] = data[i]["tokens"][:2] + ["<garbled>"]
    print(f"built {rows} reviews ({round(noise * rows)} corrupted)")
    return data


@step
def check_data_quality(build_dataset: list[dict], fetch_embedding: dict[str, list[float]]) -> dict:
    """Count unusable rows; data is fit for training if <= 30% are bad and >= 20 are usable."""
    rows = len(build_dataset)
    bad = sum(is_corrupted(row, fetch_embedding) for row in build_dataset)
    fraction = bad / max(1, rows)
    problems = []
    if fraction > MAX_BAD_FRACTION:
        problems.append(f"{bad}/{rows} rows unusable ({fraction:.0%} > {MAX_BAD_FRACTION:.0%})")
    if rows - bad < MIN_USABLE_ROWS:
        problems.append(f"only {rows - bad} usable rows (need {MIN_USABLE_ROWS})")
    log_metric("bad_row_fraction", fraction)
    print(f"{bad}/{rows} rows unusable ({fraction:.0%}): {'; '.join(problems) or 'OK'}")
    return {
        "ok": not problems,
        "bad_rows": bad,
        "rows": rows,
        "bad_fraction": fraction,
        "problems": problems,
    }


@step(when=lambda check_data_quality: check_data_quality["ok"])
def train(
    build_dataset: list[dict],
    fetch_embedding: dict[str, list[float]],
    check_data_quality: dict,
) -> dict:
    """Train a nearest-centroid classifier on the clean training rows' embeddings."""
    by_label: dict[int, list[list[float]]] = {0: [], 1: []}
    for row in build_dataset:
        if row["split"] == "train" and not is_corrupted(row, fetch_embedding):
            by_label[row["label"]].append(embed(row["tokens"], fetch_embedding))
    centroids = {label: mean_vector(vectors) for label, vectors in by_label.items()}
    print(
        f"trained on {sum(len(v) for v in by_label.values())} clean rows "
        f"(skipped {check_data_quality['bad_rows']} bad rows overall)"
    )
    return {"centroids": centroids, "train_rows": sum(len(v) for v in by_label.values())}


@step
def check_model_quality(
    train: dict,
    build_dataset: list[dict],
    fetch_embedding: dict[str, list[float]],
    min_accuracy: float = param(0.8, help="test accuracy a model needs to be released"),
) -> dict:
    """Measure test accuracy; the model qualifies for release when it reaches `min_accuracy`."""
    correct = total = 0
    for row in build_dataset:
        if row["split"] == "test" and not is_corrupted(row, fetch_embedding):
            vector = embed(row["tokens"], fetch_embedding)
            centroids = train["centroids"]
            predicted = min(centroids, key=lambda label: math.dist(vector, centroids[label]))
            correct += predicted == row["label"]
            total += 1
    accuracy = correct / max(1, total)
    log_metric("accuracy", accuracy)
    qualified = accuracy >= min_accuracy
    print(
        f"test accuracy {accuracy:.3f} on {total} rows (need {min_accuracy}): "
        f"{'qualified' if qualified else 'NOT qualified'}"
    )
    return {
        "qualified": qualified,
        "accuracy": accuracy,
        "test_rows": total,
        "min_accuracy": min_accuracy,
    }


@step(when=lambda check_model_quality: check_model_quality["qualified"])
def release(train: dict, check_model_quality: dict) -> dict:
    """Publish the model under a content-derived version string."""
    digest = hashlib.sha256(repr(sorted(train["centroids"].items())).encode()).hexdigest()[:10]
    release_info = {"version": f"review-clf-{digest}", "accuracy": check_model_quality["accuracy"]}
    print(f"released {release_info['version']} (accuracy {release_info['accuracy']:.3f})")
    return release_info


@step(
    trigger="all_done",
    on_success=post_json(url_env="DATA_TEAM_WEBHOOK"),
    when=lambda check_data_quality, check_model_quality: (
        check_data_quality is None
        or not check_data_quality["ok"]
        or (check_model_quality is not None and not check_model_quality["qualified"])
    ),
)
def notify_data_team(check_data_quality: dict | None, check_model_quality: dict | None) -> str:
    """Tell the data team why nothing was released (skipped upstreams arrive as None)."""
    if check_data_quality is None:
        message = "data quality check did not finish; nothing was trained"
    elif not check_data_quality["ok"]:
        problems = "; ".join(check_data_quality["problems"])
        message = f"data rejected: {problems}; nothing was trained"
    else:
        message = (
            f"model not released: accuracy {check_model_quality['accuracy']:.3f} "
            f"< required {check_model_quality['min_accuracy']}"
        )
    print(f"[to data-team@example.com] {message}")
    return message


initiation >> [fetch_embedding, build_dataset] >> check_data_quality
check_data_quality >> train >> check_model_quality >> release
[check_data_quality, check_model_quality] >> notify_data_team
