"""flow's benchmarks: each module runs as `python -m benchmarks.NAME` and ends with a verdict line.

See `benchmarks/README.md` for what each one measures and the budgets it stands against.
"""
