"""Writes `rows` points (x, label) as JSON to $FLOW_OUTPUTS/data: label is 1 when x > 0.5."""

import argparse
import json
import os
import random

parser = argparse.ArgumentParser()
parser.add_argument("--rows", type=int, required=True)
rows = parser.parse_args().rows
generator = random.Random(7)
points = [(round(x, 4), int(x > 0.5)) for x in (generator.random() for _ in range(rows))]
with open(os.path.join(os.environ["FLOW_OUTPUTS"], "data"), "w") as handle:
    json.dump(points, handle)
print(f"prepared {rows} rows")
