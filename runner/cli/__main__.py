"""Provides `python -m runner.cli`: the `flow` command, as `python -m runner` is."""

from runner.cli import main

main()
