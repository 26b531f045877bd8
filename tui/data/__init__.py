"""Provides the TUI's Textual-free data layer: run state built from events, DAG layout, formatting."""
