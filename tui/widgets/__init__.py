"""Provides the TUI's widgets: the DAG, logs, details, run history and flow list."""
