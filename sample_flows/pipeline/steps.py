"""Python functions a YAML flow calls with `uses: pipeline.steps:NAME`."""

import json


def train(data: str, lr: float = 0.5) -> dict[str, str]:
    """Learns a decision threshold on x by gradient steps; returns it as JSON text (an output)."""
    points = json.loads(data)
    threshold = 0.0
    for _ in range(50):
        errors = sum(int(x > threshold) - label for x, label in points)
        threshold += lr * errors / len(points)
    print(f"threshold {threshold:.3f}")
    return {"weights": json.dumps({"threshold": round(threshold, 4)})}
