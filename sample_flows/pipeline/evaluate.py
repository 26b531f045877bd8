"""Reads the weights and the data from $FLOW_INPUT_WEIGHTS / $FLOW_INPUT_DATA; writes the accuracy."""

import json
import os

threshold = json.loads(os.environ["FLOW_INPUT_WEIGHTS"])["threshold"]
points = json.loads(os.environ["FLOW_INPUT_DATA"])
correct = sum(int(x > threshold) == label for x, label in points)
accuracy = correct / len(points)
with open(os.path.join(os.environ["FLOW_OUTPUTS"], "accuracy"), "w") as handle:
    handle.write(f"{accuracy:.3f}\n")
print(f"accuracy {accuracy:.3f} on {len(points)} rows")
