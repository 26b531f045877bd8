"""`Pacer`: the TUI's periodic looks at the store stay one at a time, and each waits for as long as the
last one took, twenty times over (a large store's slow query is not repeated every second)."""

from __future__ import annotations

from tui.controllers.pacer import SHARE, Pacer


def test_one_look_at_a_time_each_spaced_by_the_last_ones_duration() -> None:
    now = [100.0]
    pacer = Pacer(clock=lambda: now[0])
    assert pacer.start()
    assert not pacer.start()  # the first is still under way
    now[0] += 0.002
    pacer.done()  # took 2 ms: the next may start 40 ms later
    now[0] += 0.002 / SHARE - 0.001
    assert not pacer.start()
    now[0] += 0.002
    assert pacer.start()
    now[0] += 0.5
    pacer.done()  # took 0.5 s: ten seconds of rest
    now[0] += 9.9
    assert not pacer.start()
    now[0] += 0.2
    assert pacer.start()
