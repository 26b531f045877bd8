"""Provides `EdgeGrid`: the edge cells of a DAG drawing, kept as the lines that make them and drawn a
row at a time when a row is asked for.

A 10,000-step drawing has over a million edge cells; marking each up front took seconds and hundreds
of megabytes, while a screen shows a few dozen rows. The layout (`tui.data.layout`) hands over its
lines instead — along the layers in each gap, across a column for a long edge, and the lanes — and a
row's cells are worked out from the lines through it the first time it is read, then kept.

Coordinates are the layout's own: `p` along the layers, `q` across them. When layers are columns a
row is a `q`; when they are rows (a drawing small enough to fit a narrow pane) the lines are turned a
quarter and every cell is worked out at once.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

UP, DOWN, LEFT, RIGHT = 1, 2, 4, 8
TURNED = {LEFT: UP, RIGHT: DOWN, UP: LEFT, DOWN: RIGHT}
"""A connection along the layers or across them, when layers are rows."""

BUCKET = 32
"""Rows per bucket of the lane index (a lane is listed in each bucket its rows meet)."""

CHUNK = 64
"""Cells of a row worked out together (the stretch of a row a screen shows is one or two of them)."""


class Along(NamedTuple):
    """A line along the layers in a gap, from `p1` to `p2` on one row (`line` in the layout).

    `into` names what it leads to: a target step, or `\\0from <source>` for a lane's departure.
    `net` tells the lines of one net from another's."""

    p1: int
    p2: int
    into: str
    net: int
    dashed: bool


class Lane(NamedTuple):
    """A net's vertical lane at `p` from row `first` to `last`, in gap `gap`.

    Where a line of another net crosses it, the lane is broken and the line drawn whole, unless the
    row is one of the lane's own (`own`) or the line leads where the lane does (`fed`)."""

    gap: int
    p: int
    first: int
    last: int
    own: set[int]
    fed: set[str]


def turned(bits: int) -> int:
    """`bits` (connections along/across the layers) as they are drawn when layers are rows."""
    return sum(TURNED[b] for b in (LEFT, RIGHT, UP, DOWN) if bits & b)


class EdgeGrid(Mapping[int, dict[int, int]]):
    """Row -> {x: connection mask} for the drawing's edge cells, worked out when first read, a stretch
    of `CHUNK` cells of a row at a time (`part`): a screen shows a few dozen rows of a drawing
    thousands of cells wide."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self._across: dict[int, list[tuple[int, int]]] = {}
        """Row -> spans [a, b) of long edges crossing a column (every cell joins left and right)."""
        self._points: dict[int, list[tuple[int, int, bool]]] = {}
        """Row -> single cells: (p, mask, dashed)."""
        self._along: dict[tuple[int, int], list[Along]] = {}
        """(gap, row) -> the lines along the layers there (what a lane there crosses or joins)."""
        self._gap_first: list[int] = []
        self._gap_last: list[int] = []
        """Per gap, the first and last `p` it takes (gaps come in order, left to right)."""
        self._undrawn: dict[int, Callable[[EdgeGrid], None]] = {}
        """Gap -> what hands its lines over (called when a row's cells in the gap are first read)."""
        self.arrows: dict[tuple[int, int], str] = {}
        """(x, y) -> arrowhead, of the gaps handed over so far (`all_arrows`: of every gap)."""
        self._lanes: list[Lane] = []
        self._lanes_in: dict[int, list[Lane]] = {}
        """Stretch -> the lanes in it."""
        self._lanes_near: dict[tuple[int, int], list[Lane]] = {}
        """(`BUCKET` rows, stretch) -> the lanes through them, listed when one of the rows is read."""
        self._stretches = 1
        """Stretches of `CHUNK` cells a row spans."""
        self._parts: dict[tuple[int, int], tuple[dict[int, int], set[int]]] = {}
        """(row, stretch) -> its cells and which of them are dashed, once worked out."""
        self._rows: dict[int, dict[int, int]] = {}
        self._dashed: dict[int, set[int]] = {}
        """When layers are rows: every cell, worked out on `finish`."""

    # ----- what the layout hands over ----------------------------------------------------------

    def across(self, q: int, a: int, b: int) -> None:
        """A long edge's line through a column: cells `a` to `b - 1` on row `q`."""
        self._across.setdefault(q, []).append((a, b))
        self._reach(b - 1)

    def point(self, p: int, q: int, bits: int, dashed: bool = False) -> None:
        self._points.setdefault(q, []).append((p, bits, dashed))
        self._reach(p)

    def along(self, gap: int, p1: int, p2: int, q: int, into: str, net: object, dashed: bool = False) -> None:
        key = (gap, q)
        line = Along(p1, p2, into, id(net), dashed)
        lines = self._along.get(key)
        if lines is None:
            self._along[key] = [line]
        else:
            lines.append(line)

    def gap(self, first: int, last: int, draw: Callable[[EdgeGrid], None]) -> None:
        """The next gap takes `p` = `first` to `last`; `draw` hands its lines over, now when layers
        are rows, else when a row's cells in it are first read."""
        self._gap_first.append(first)
        self._gap_last.append(last)
        self._reach(last)
        if self.down:
            draw(self)
        else:
            self._undrawn[len(self._gap_first) - 1] = draw

    def lane(self, gap: int, p: int, first: int, last: int, own: set[int], fed: set[str]) -> None:
        lane = Lane(gap, p, first, last, own, fed)
        self._lanes.append(lane)
        self._lanes_in.setdefault(p // CHUNK, []).append(lane)
        self._reach(p)

    def crossed(self, gap: int, p: int, q: int, besides: object = None) -> bool:
        """A line along the layers (not of net `besides`) runs through cell (p, q) of gap `gap`."""
        skip = id(besides) if besides is not None else None
        return any(line.p1 <= p <= line.p2 and line.net != skip for line in self._along.get((gap, q), ()))

    def finish(self) -> None:
        """Everything is handed over: when layers are rows, turn every cell now (a small drawing)."""
        if not self.down:
            return
        stretches = self._stretches
        self._stretches = 1
        for q in self._line_rows():
            cells, dashed = self._work_out(q, 0, stretches * CHUNK)
            for p, bits in cells.items():
                row = self._rows.setdefault(p, {})
                row[q] = row.get(q, 0) | turned(bits)
                self._reach(q)
                if p in dashed:
                    self._dashed.setdefault(p, set()).add(q)

    def _reach(self, p: int) -> None:
        if p >= self._stretches * CHUNK:
            self._stretches = p // CHUNK + 1

    # ----- reading -----------------------------------------------------------------------------

    def part(self, y: int, stretch: int) -> tuple[dict[int, int], set[int]]:
        """Row `y`'s cells from x = `stretch * CHUNK` on (`CHUNK` of them), and which are dashed."""
        key = (y, stretch)
        part = self._parts.get(key)
        if part is None:
            lo, hi = stretch * CHUNK, stretch * CHUNK + CHUNK
            self._draw(lo, hi)
            if self.down:
                row, dashed = self._rows.get(y, {}), self._dashed.get(y, set())
                part = {x: m for x, m in row.items() if lo <= x < hi}, {x for x in dashed if lo <= x < hi}
            else:
                part = self._work_out(y, lo, hi)
            self._parts[key] = part
        return part

    def arrow(self, x: int, y: int) -> str | None:
        """The arrowhead at cell (x, y), if any."""
        if not self.down:
            self._draw(x, x + 1)
        return self.arrows.get((x, y))

    def all_arrows(self) -> dict[tuple[int, int], str]:
        self._draw(0, self._stretches * CHUNK)
        return self.arrows

    def _draw(self, lo: int, hi: int) -> None:
        """Hand over the lines of the gaps not yet drawn that take any `p` from `lo` to `hi - 1`."""
        if self._undrawn:
            for gap in self._gaps_in(lo, hi):
                draw = self._undrawn.pop(gap, None)
                if draw is not None:
                    draw(self)

    def _gaps_in(self, lo: int, hi: int) -> range:
        return range(bisect.bisect_left(self._gap_last, lo), bisect.bisect_left(self._gap_first, hi))

    def mask(self, x: int, y: int) -> int:
        """Cell (x, y)'s connections (0: no edge there)."""
        return self.part(y, x // CHUNK)[0].get(x, 0) if x >= 0 else 0

    def dashed(self, x: int, y: int) -> bool:
        """The cell is part of a dashed (conditional) edge."""
        return x >= 0 and x in self.part(y, x // CHUNK)[1]

    def __getitem__(self, y: int) -> dict[int, int]:
        if self.down:
            return self._rows[y]
        row: dict[int, int] = {}
        for stretch in range(self._stretches):
            row.update(self.part(y, stretch)[0])
        if not row:
            raise KeyError(y)
        return row

    def __iter__(self) -> Iterator[int]:
        if self.down:
            yield from sorted(self._rows)
            return
        for y in self._line_rows():
            if y in self:
                yield y

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def _line_rows(self) -> list[int]:
        """Every row with a line (in the layout's coordinates), in order."""
        self._draw(0, self._stretches * CHUNK)
        rows = {*self._across, *self._points, *(q for _, q in self._along)}
        for lane in self._lanes:
            rows.update(range(lane.first, lane.last + 1))
        return sorted(rows)

    def _lanes_at(self, q: int, stretch: int) -> list[Lane]:
        key = (q // BUCKET, stretch)
        lanes = self._lanes_near.get(key)
        if lanes is None:
            top, bottom = key[0] * BUCKET, key[0] * BUCKET + BUCKET - 1
            near = [n for n in self._lanes_in.get(stretch, ()) if n.first <= bottom and n.last >= top]
            lanes = self._lanes_near[key] = near
        return lanes

    def _work_out(self, q: int, lo: int, hi: int) -> tuple[dict[int, int], set[int]]:
        """The cells of line row `q` from `p` = `lo` to `hi - 1`, p -> mask along/across the layers,
        and which of them are dashed."""
        cells: dict[int, int] = {}
        dashed: set[int] = set()
        for a, b in self._across.get(q, ()):
            for p in range(max(a, lo), min(b, hi)):
                cells[p] = cells.get(p, 0) | LEFT | RIGHT
        for p, bits, dash in self._points.get(q, ()):
            if lo <= p < hi:
                cells[p] = cells.get(p, 0) | bits
                if dash:
                    dashed.add(p)
        for gap in self._gaps_in(lo, hi):
            for line in self._along.get((gap, q), ()):
                p1, p2 = line.p1, line.p2
                for p in range(max(p1, lo), min(p2 + 1, hi)):
                    cells[p] = cells.get(p, 0) | (LEFT if p > p1 else 0) | (RIGHT if p < p2 else 0)
                    if line.dashed:
                        dashed.add(p)
        if lo % CHUNK == 0 and hi - lo == CHUNK:
            lanes = self._lanes_at(q, lo // CHUNK)
        else:
            lanes = [n for n in self._lanes if lo <= n.p < hi]
        for lane in lanes:
            if not lane.first <= q <= lane.last:
                continue
            p = lane.p
            if q not in lane.own:
                lines = self._along.get((lane.gap, q), ())
                crossing = [line.into for line in lines if line.p1 <= p <= line.p2]
                if crossing and not lane.fed.intersection(crossing):
                    continue  # the line is drawn whole, the lane broken
            cells[p] = cells.get(p, 0) | (UP if q > lane.first else 0) | (DOWN if q < lane.last else 0)
        return cells, dashed
