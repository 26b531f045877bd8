"""Provides `layout_dag` and `fit_layout`: a graph's steps placed on a character grid, left to right.

A Sugiyama-style drawing, simple enough to lay out 500 steps in tens of milliseconds: columns are
`Graph.layers()`; an edge that skips columns runs through a dummy node in each column it crosses
(one per source and column, shared by all its long edges, drawn as a straight line), so edges never
cut through boxes; nodes in a column are ordered by the barycentre of their neighbours and pulled
towards their upstream steps' rows, so chains draw straight.

Edges run in the gap between two columns. An edge between rows on one level is a straight line.
Otherwise its source gets a vertical *lane* in the gap: out of the source, along the lane, into each
target with an arrowhead. Lanes are what keeps fan-in and fan-out unambiguous:

- a lane belongs to one source, or to the sources of a fan-in, whose lines join it and which leads
  only into their target (as a fan-out's lane leaves one source); two lanes share a column only where
  their rows never meet;
- at a row where a source leaves, the lanes of other sources arriving there lie to its right, so a
  departing line never runs into an arrival;
- a junction (`┬ ┴ ├ ┤ ┼`) is drawn only where lines really connect: where a line crosses a lane it
  does not connect to, the line is drawn whole and the lane is broken (`─`, never `┼`);
- a lane that ends where it joins other lines ends in an arrowhead (`▼`), so the join reads one way;
  a fan-out's branch into a step other lines enter gets a lane of its own.

Two renderings: boxes three rows high with the status and duration (`Style(boxed=True)`), and a
compact one, a row per step with its status glyph and name, for graphs that would not fit.
`fit_layout` picks the largest rendering that fits the room given, names ellipsised if need be.
The incoming edges of a conditional (`when=`) step are dashed and end in a hollow arrowhead.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

from dsl.gcpause import gc_paused
from tui.data.edges import CHUNK, EdgeGrid
from tui.data.edges import DOWN as DOWN
from tui.data.edges import LEFT as LEFT
from tui.data.edges import RIGHT as RIGHT
from tui.data.edges import UP as UP
from tui.data.lanes import Net, assign_lanes, merge_fan_ins, split_shared

MIN_NAME = 6
"""The fewest characters of a name a compact drawing keeps (`check…`)."""
NOTE_ROOM = 12
"""Inner width a box needs for the note on its bottom border (` 6/6 12.3s ` and the corners)."""

LINES = {
    LEFT | RIGHT: "─",
    LEFT: "─",
    RIGHT: "─",
    UP | DOWN: "│",
    UP: "│",
    DOWN: "│",
    DOWN | RIGHT: "╭",
    DOWN | LEFT: "╮",
    UP | RIGHT: "╰",
    UP | LEFT: "╯",
    UP | DOWN | RIGHT: "├",
    UP | DOWN | LEFT: "┤",
    LEFT | RIGHT | DOWN: "┬",
    LEFT | RIGHT | UP: "┴",
    UP | DOWN | LEFT | RIGHT: "┼",
}
MERGE = {(False, DOWN): "▼", (False, UP): "▲", (True, DOWN): "▶", (True, UP): "◀"}
"""(layers are rows, the way the lane runs) -> the arrowhead a lane ends in where it joins others."""
DASHED = {LEFT | RIGHT: "╌", LEFT: "╌", RIGHT: "╌", UP | DOWN: "╎", UP: "╎", DOWN: "╎"}


@dataclass(frozen=True)
class Style:
    """How a graph is drawn.

    Attributes:
        boxed: steps as three-row boxes (status, name, duration); else one row (`✓ name`).
        max_name: names longer than this end in `…` (the details tab has them whole).
        down: layers are rows, top to bottom (one row per step only): a narrow pane that has rows
            to spare shows whole names this way.
    """

    boxed: bool = True
    max_name: int = 24
    down: bool = False

    @property
    def height(self) -> int:
        return 3 if self.boxed else 1


STYLES = (Style(True, 24), Style(True, 16))
"""The boxed styles `fit_layout` tries, roomiest first, before one row per step."""


def clip(name: str, width: int) -> str:
    """`name` in at most `width` characters, ending in `…` when shortened."""
    return name if len(name) <= width else name[: max(1, width - 1)] + "…"


@dataclass
class Box:
    """A step's box (or a dummy node's line): top-left corner, size, column."""

    name: str
    x: int
    y: int
    width: int
    column: int
    conditional: bool = False
    height: int = 3

    @property
    def mid(self) -> int:
        return self.y + self.height // 2

    def across(self, down: bool) -> int:
        """Where the box sits across the layers: its middle row, or its middle column when layers
        are rows (keyboard moves between layers go to the nearest box by this)."""
        return self.x + self.width // 2 if down else self.mid


@dataclass
class DagLayout:
    """The drawing of a graph.

    Attributes:
        style: the rendering it was laid out for.
        boxes: step name -> box (real steps only).
        columns: per layer, the real steps top to bottom (keyboard navigation).
        edges: row -> {x: connection mask} for edge cells (worked out as rows are read), and
            which cells are of dashed (conditional) edges.
        arrows: (x, y) -> arrowhead character.
        rows: row -> boxes that cross it (rendering touches only these).
        outgoing: steps with an edge leaving them (a compact node draws its line from its name).
        width, height: the grid size.
    """

    style: Style = field(default_factory=Style)
    boxes: dict[str, Box] = field(default_factory=dict)
    columns: list[list[str]] = field(default_factory=list)
    edges: EdgeGrid = field(default_factory=EdgeGrid)
    rows: dict[int, list[Box]] = field(default_factory=dict)
    outgoing: set[str] = field(default_factory=set)
    width: int = 0
    height: int = 0
    _edge_chars: dict[tuple[int, int], dict[int, str]] = field(default_factory=dict, repr=False)
    """(row, stretch of `CHUNK` cells) -> x -> the character drawn there."""

    @property
    def arrows(self) -> dict[tuple[int, int], str]:
        return self.edges.all_arrows()

    def box_at(self, x: int, y: int) -> str | None:
        """The step whose box covers the cell, if any."""
        for box in self.rows.get(y, ()):
            if box.x <= x < box.x + box.width:
                return box.name
        return None

    def edge_char(self, x: int, y: int) -> str | None:
        arrow = self.edges.arrow(x, y)
        if arrow is not None:
            return arrow
        return line_char(self.edges.mask(x, y), self.edges.dashed(x, y))

    def edge_cells(self, y: int, start: int, end: int) -> Iterator[tuple[int, str]]:
        """Row `y`'s edge cells from x = `start` to `end - 1` as drawn: (x, character)."""
        arrows = self.edges.arrows
        for stretch in range(max(0, start) // CHUNK, max(0, end - 1) // CHUNK + 1):
            key = (y, stretch)
            chars = self._edge_chars.get(key)
            if chars is None:  # kept: a row is painted again and again (a spinner, a selection)
                cells, dashed = self.edges.part(y, stretch)
                chars = self._edge_chars[key] = {
                    x: arrows.get((x, y)) or line_char(mask, x in dashed) or " " for x, mask in cells.items()
                }
            for x, char in chars.items():
                if start <= x < end:
                    yield x, char


def line_char(mask: int, dashed: bool) -> str | None:
    """The character of an edge cell with connections `mask` (None: no connection)."""
    if not mask:
        return None
    if dashed and mask in DASHED:
        return DASHED[mask]
    return LINES.get(mask, "┼")


def _order(layers: list[list[str]], up: dict[str, list[str]], down: dict[str, list[str]]) -> None:
    """Reorder each layer in place by the barycentre of neighbours (down then up sweeps)."""
    position: dict[str, float] = {}
    for layer in layers:
        for index, name in enumerate(layer):
            position[name] = index
    for sweep in range(4):
        forward = sweep % 2 == 0
        sequence = layers[1:] if forward else layers[-2::-1]
        for layer in sequence:
            keys = {}
            at = position.__getitem__
            for index, name in enumerate(layer):
                neighbours = up[name] if forward else down[name]
                keys[name] = (sum(map(at, neighbours)) / len(neighbours) if neighbours else at(name), index)
            layer.sort(key=keys.__getitem__)
            for index, name in enumerate(layer):
                position[name] = index


def _node_width(name: str, style: Style, extra: int) -> int:
    """Cells a step's box takes: the name (clipped), the status glyph, padding and borders."""
    return _width(len(name), style, extra)


def _width(length: int, style: Style, extra: int) -> int:
    """`_node_width` of a name `length` characters long (it never shrinks as names grow longer)."""
    shown = length if length <= style.max_name else max(1, style.max_name - 1) + 1  # `clip`
    if style.boxed:
        return max(shown + 4, NOTE_ROOM, extra + 6) + 2
    return shown + 4  # " ✓ name "


def column_widths(layers: list[list[str]], style: Style, labels: dict[str, int] | None = None) -> list[int]:
    """Each column's width in `style` (cheap: `fit_layout` rules out styles with it first)."""
    if labels:
        return [max((_node_width(n, style, labels.get(n, 0)) for n in layer), default=8) for layer in layers]
    return [_width(max(map(len, layer)), style, 0) if layer else 8 for layer in layers]


def layout_dag(
    layers: list[list[str]],
    upstream: dict[str, list[str]],
    conditional: set[str] | None = None,
    labels: dict[str, int] | None = None,
    style: Style | None = None,
) -> DagLayout:
    """Lay out a DAG given its layers (`Graph.layers()`) and each step's upstream steps.

    Args:
        layers: columns of step names, left to right.
        upstream: step -> its upstream steps.
        conditional: steps with a `when=` predicate (their incoming edges are dashed).
        labels: step -> width its bottom-border note needs (boxed style).
        style: the rendering (default: boxes, names up to 24 characters).
    """
    style = style or Style()
    conditional = conditional or set()
    column_of = {name: c for c, layer in enumerate(layers) for name in layer}
    grid: list[list[str]] = [list(layer) for layer in layers]
    up: dict[str, list[str]] = {name: [] for layer in layers for name in layer}
    down: dict[str, list[str]] = {name: [] for layer in layers for name in layer}
    segments: dict[tuple[str, str], bool] = {}

    for name, column in column_of.items():
        dashed = name in conditional
        into = up[name]
        for source in upstream.get(name, ()):
            if source not in column_of:
                continue
            previous = source
            for c in range(column_of[source] + 1, column):
                hop = f"\0{source}\0{c}"  # one dummy per source and column, shared by its long edges
                if hop not in up:
                    grid[c].append(hop)
                    up[hop], down[hop] = [], []
                if (previous, hop) not in segments:
                    segments[(previous, hop)] = False
                    up[hop].append(previous)
                    down[previous].append(hop)
                previous = hop
            if (previous, name) not in segments:
                segments[(previous, name)] = dashed
                into.append(previous)
                down[previous].append(name)
    _order(grid, up, down)

    # Real steps first, lines of long edges after them; then pull each node towards the median
    # place of its upstream nodes (chains draw straight), keeping the layer's order. `top`, `mid` and
    # `extent` run across the layers: rows when layers are columns, columns when layers are rows.
    extent = {
        name: 1 if name.startswith("\0") else (_node_width(name, style, 0) if style.down else style.height)
        for layer in grid
        for name in layer
    }
    spacing = 2 if style.down else 1
    for layer in grid:
        layer.sort(key=lambda n: n.startswith("\0"))
    top: dict[str, int] = {}
    mid: dict[str, int] = {}
    for layer in grid:
        floor = 0
        for name in layer:
            size = extent[name]
            parents = sorted(mid[p] for p in up[name] if p in mid)
            want = parents[len(parents) // 2] - size // 2 if parents else floor
            top[name] = max(want, floor)
            mid[name] = top[name] + size // 2
            floor = top[name] + size + spacing
    thickness = [1] * len(layers) if style.down else column_widths(layers, style, labels)
    lead, tail = (0, 0) if style.down else (1, 2)
    result = DagLayout(style=style)
    nodes: dict[str, Box] = {}
    gaps: list[tuple[list[Net], int]] = []
    for layer in grid:
        nets = merge_fan_ins(
            split_shared(
                [
                    (name, mid[name], [(t, mid[t], segments[(name, t)]) for t in down[name]])
                    for name in layer
                    if down[name]
                ]
            )
        )
        lanes = assign_lanes(nets)
        gaps.append((nets, max(1, lanes) if style.down else lanes + lead + tail))
    at = 0 if style.down else 1
    starts = []
    for c, size in enumerate(thickness):
        starts.append(at)
        at += size + gaps[c][1]
    for c, layer in enumerate(grid):
        result.columns.append([n for n in layer if not n.startswith("\0")])
        for name in layer:
            if style.down:
                box = Box(name, top[name], starts[c], extent[name], c, name in conditional, 1)
            else:
                box = Box(name, starts[c], top[name], thickness[c], c, name in conditional, extent[name])
            nodes[name] = box
            if not name.startswith("\0"):
                result.boxes[name] = box
                for row in range(box.y, box.y + box.height):
                    result.rows.setdefault(row, []).append(box)
                if down[name]:
                    result.outgoing.add(name)

    # Lines run along the layers (p) and across them (q); `EdgeGrid` turns them into cells, a row
    # at a time as rows are read (when layers are rows, it turns a cell and its connections). A
    # gap's lines are handed over when a row's cells in it are first read.
    edges = result.edges = EdgeGrid(style.down)
    for c, layer in enumerate(grid):
        for name in layer:
            if name.startswith("\0"):  # a long edge passing through this layer
                edges.across(mid[name], starts[c], starts[c] + thickness[c])
    for c, (nets, size) in enumerate(gaps):
        start = starts[c] + thickness[c]
        edges.gap(start, start + size - 1, partial(_draw_gap, c, nets, start, start + size - 1, lead))
    edges.finish()
    result.width = max((box.x + box.width for box in nodes.values()), default=0) + (0 if style.down else 1)
    result.height = max((box.y + box.height for box in nodes.values()), default=0)
    return result


def _draw_gap(c: int, nets: list[Net], start: int, end: int, lead: int, edges: EdgeGrid) -> None:
    """Hand the lines of gap `c` (from x `start` to `end` when layers are columns) to `edges`."""
    down = edges.down
    for net in nets:
        departures = net.departures()
        for _, row in departures:
            edges.point(start, row, LEFT)  # joins the box's border (or the long edge's line)
        if net.straight:
            target, q, dashed = net.targets[0]
            edges.along(c, start, end, q, target, net, dashed)
            continue
        lane = start + lead + net.lane
        for source, row in departures:
            edges.along(c, start, lane, row, f"\0from {source}", net)
        for target, q, dashed in net.targets:
            edges.along(c, lane, end, q, target, net, dashed)
    # The lanes last, so each knows which lines it crosses rather than joins.
    for net in nets:
        if net.straight:
            continue
        lane = start + lead + net.lane
        first, last = net.span
        departures = net.departures()
        leaving = {row for _, row in departures}
        own = leaving | {q for _, q, _ in net.targets}
        fed = {t for t, _, _ in net.targets} | {f"\0from {source}" for source, _ in departures}
        edges.lane(c, lane, first, last, own, fed)
        # A lane that ends joining other lines ends in an arrowhead, so nobody reads the join
        # as those lines branching off up the lane (to this net's other targets).
        for end_row, before, ahead in ((last, last - 1, DOWN), (first, first + 1, UP)):
            if end_row in leaving or before in own or edges.crossed(c, lane, before):
                continue
            if edges.crossed(c, lane, end_row, besides=net):
                x, y = (before, lane) if down else (lane, before)
                edges.arrows[(x, y)] = MERGE[(down, ahead)]
    for net in nets:
        for target, q, dashed in net.targets:
            if target.startswith("\0") or down:
                edges.point(end, q, RIGHT, dashed)
            else:
                edges.arrows[(end, q)] = "▷" if dashed else "▶"


def reduce_edges(layers: list[list[str]], upstream: dict[str, list[str]]) -> dict[str, list[str]]:
    """The transitive reduction: each step's upstream steps less those another of them already
    depends on (`load -> train -> evaluate` draws no `load -> evaluate`; the run order is the same,
    and the details tab lists every input). What people draw by hand, and far fewer crossings."""
    column = {name: c for c, layer in enumerate(layers) for name in layer}
    reduced: dict[str, list[str]] = {}
    spread: list[str] = []
    """Steps whose upstream steps lie in more than one column: the only ones an edge can be implied for."""
    forward = True
    needed = -1
    for c, layer in enumerate(layers):
        for name in layer:
            ups = reduced[name] = [u for u in upstream.get(name, ()) if u in column]
            if not ups:
                continue
            if len(ups) == 1:
                forward = forward and column[ups[0]] < c
                continue
            columns = [column[u] for u in ups]
            last = max(columns)
            forward = forward and last < c
            if min(columns) != last:
                spread.append(name)
                needed = max(needed, last)
    # Where every edge runs to a later column (as `Graph.layers()` places steps), an upstream step
    # is implied only through another one in a later column than its own: ancestors are needed up
    # to the last column holding such a step, often none (a fan-out, layers of the same depth).
    if not forward:
        needed = len(layers) - 1
    bit = {name: 1 << i for i, name in enumerate(n for layer in layers[: needed + 1] for n in layer)}
    ancestors: dict[str, int] = {}
    for layer in layers[: needed + 1]:
        for name in layer:
            implied = 0
            mask = 0
            ups = reduced[name]
            for u in ups:
                implied |= ancestors.get(u, 0)
                mask |= ancestors.get(u, 0) | bit[u]
            ancestors[name] = mask
            reduced[name] = [u for u in ups if not implied & bit[u]]
    for name in spread:
        if column[name] > needed:
            ups = reduced[name]
            implied = 0
            for u in ups:
                implied |= ancestors[u]
            reduced[name] = [u for u in ups if not implied & bit[u]]
    return reduced


def fit_layout(
    layers: list[list[str]],
    upstream: dict[str, list[str]],
    conditional: set[str] | None = None,
    labels: dict[str, int] | None = None,
    *,
    width: int,
    height: int,
    cache: dict[Style, DagLayout] | None = None,
) -> DagLayout:
    """The roomiest rendering of the graph that fits `width` × `height` cells: boxes if they fit;
    else one row per step with whole names, layers as columns or (a narrow pane with rows to spare)
    as rows; else layers as columns with names cut as little as needed (at worst to `MIN_NAME`, to
    be scrolled). Where lines go does not depend on how long names are, so that last drawing's
    names get the room its gaps leave. `cache` keeps the drawings made per style (a pane resized
    asks again; a 500-step drawing takes tens of milliseconds)."""
    made = {} if cache is None else cache

    def lay(style: Style) -> DagLayout:
        layout = made.get(style)
        if layout is None:
            # A 10,000-step drawing makes a few hundred thousand objects that stay alive or die by
            # reference counting: the collector, run by their count, rescanned the loaded flow for
            # nothing, a third of the layout's time.
            with gc_paused():
                layout = made[style] = layout_dag(layers, upstream, conditional, labels, style)
        return layout

    for style in STYLES:
        widths = column_widths(layers, style, labels)
        if sum(widths) + 3 * max(0, len(widths) - 1) + 2 > width:
            continue
        if max((len(layer) for layer in layers), default=0) * (style.height + 1) - 1 > height:
            continue
        layout = lay(style)
        if layout.width <= width and layout.height <= height:
            return layout
    longest = max((len(n) for layer in layers for n in layer), default=8)
    widest = Style(False, longest)
    layout = lay(widest)
    if layout.width <= width and layout.height <= height:
        return layout
    tall = Style(False, longest, down=True)
    if 2 * len(layers) - 1 <= height and all(
        sum(_node_width(n, tall, 0) + 2 for n in layer) <= width for layer in layers
    ):
        turned = lay(tall)
        if turned.width <= width and turned.height <= height:
            return turned
    gaps = layout.width - sum(column_widths(layers, widest)) - 2
    cap = longest
    while cap > MIN_NAME and sum(column_widths(layers, Style(False, cap))) + gaps + 2 > width:
        cap -= 1
    return lay(Style(False, cap))
