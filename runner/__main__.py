"""`python -m runner` is the `flow` command."""

from runner.cli import main

main()
