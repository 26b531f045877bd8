"""Provides the terminal output of headless runs: the one wording of a run (`narration`), the plain
and JSON reporters (`plain`), the live terminal view (`live`, the only one importing Rich), and the
flow graph as text, Mermaid or DOT (`graph`).
"""
