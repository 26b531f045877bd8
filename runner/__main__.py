"""Provides `python -m runner`: the `flow` command (`runner.cli.main`), for when the console script is
not on PATH."""

from runner.cli import main

main()
