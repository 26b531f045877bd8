"""Provides the TUI's screens: the main screen and its dialogs."""
