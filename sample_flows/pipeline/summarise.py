"""Sums the numbers in $FLOW_INPUT_NUMBERS (a JSON list) into $FLOW_OUTPUTS/total."""

import json
import os

numbers = json.loads(os.environ["FLOW_INPUT_NUMBERS"])
with open(os.path.join(os.environ["FLOW_OUTPUTS"], "total"), "w") as handle:
    handle.write(str(sum(numbers)))
print(f"summed {len(numbers)} numbers")
