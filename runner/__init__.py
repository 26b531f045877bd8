"""flow's engine: planning, fingerprints and the cache, executors, the run store, the watcher and the CLI.

Nothing here imports Textual; front ends subscribe to the engine's events (`runner.events`).
"""
