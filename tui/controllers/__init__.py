"""Provides the controllers: plain Python that owns a flow's session, store reads and commands, for
the widgets to render (no Textual in here: `tests/tui/test_controller.py` drives one without an app)."""
