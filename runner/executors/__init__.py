"""Executors: where a step's function actually runs (worker processes, in-process, Dask)."""
