"""`runner.text.visible`: step- and user-supplied text never drives the terminal."""

from __future__ import annotations

from runner.text import visible


def test_escape_sequences_become_visible_symbols() -> None:
    assert visible("\x1b]0;pwned\x07title") == "␛]0;pwned␇title"
    assert visible("\x1b[2J") == "␛[2J"
    assert visible("ok\rfake") == "ok␍fake"
    assert visible("\x7f\x9b") == "␡\\x9b"


def test_plain_text_markup_lookalikes_tabs_and_newlines_are_kept() -> None:
    for text in ("[epoch 3] loss 0.25", "regex [a-z]+", "[bold red]x[/]", "naïve 日本 🙂", "a\tb\nc"):
        assert visible(text) == text


def test_one_line_contexts_show_newlines_and_tabs() -> None:
    assert visible("a\nb\tc", newlines=False) == "a␊b␉c"
