"""Provides `layout_dag`: places a graph's steps on a character grid, left to right by layer.

A Sugiyama-style drawing, kept simple enough to lay out 500 steps in about 15 ms:
columns are `Graph.layers()`; an edge that skips layers gets a dummy node in each layer it
crosses (drawn as a straight line), so edges never cut through boxes; within a column nodes are
ordered by the barycentre of their neighbours (a few sweeps) and then pulled towards the rows of
their upstream steps so chains draw straight. Edges run in the gap between two columns: out of
the source box, along a vertical lane picked per source, into the target with an arrowhead. The
incoming edges of a conditional (`when=`) step are dashed and end in a hollow arrowhead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BOX_HEIGHT = 3
GAP = 7
MAX_NAME = 22
MIN_NAME = 8
UP, DOWN, LEFT, RIGHT = 1, 2, 4, 8

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
DASHED = {LEFT | RIGHT: "╌", LEFT: "╌", RIGHT: "╌"}


@dataclass
class Box:
    """A step's box: top-left corner, size, and the cell its label starts in."""

    name: str
    x: int
    y: int
    width: int
    column: int
    conditional: bool = False

    @property
    def mid(self) -> int:
        return self.y + 1


@dataclass
class DagLayout:
    """The drawing of a graph.

    Attributes:
        boxes: step name -> box.
        columns: per layer, the real steps top to bottom (keyboard navigation).
        edges: row -> {x: connection mask} for edge cells.
        dashed: cells of dashed (conditional) edges.
        arrows: (x, y) -> arrowhead character.
        rows: row -> boxes that cross it (rendering touches only these).
        width, height: the grid size.
    """

    boxes: dict[str, Box] = field(default_factory=dict)
    columns: list[list[str]] = field(default_factory=list)
    edges: dict[int, dict[int, int]] = field(default_factory=dict)
    dashed: set[tuple[int, int]] = field(default_factory=set)
    arrows: dict[tuple[int, int], str] = field(default_factory=dict)
    rows: dict[int, list[Box]] = field(default_factory=dict)
    width: int = 0
    height: int = 0

    def box_at(self, x: int, y: int) -> str | None:
        """The step whose box covers the cell, if any."""
        for box in self.rows.get(y, ()):
            if box.x <= x < box.x + box.width:
                return box.name
        return None

    def edge_char(self, x: int, y: int) -> str | None:
        arrow = self.arrows.get((x, y))
        if arrow is not None:
            return arrow
        mask = self.edges.get(y, {}).get(x)
        if not mask:
            return None
        if (x, y) in self.dashed and mask in DASHED:
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
            for index, name in enumerate(layer):
                neighbours = up[name] if forward else down[name]
                keys[name] = (
                    sum(position[n] for n in neighbours) / len(neighbours) if neighbours else position[name],
                    index,
                )
            layer.sort(key=keys.__getitem__)
            for index, name in enumerate(layer):
                position[name] = index


def layout_dag(
    layers: list[list[str]],
    upstream: dict[str, list[str]],
    conditional: set[str] | None = None,
    labels: dict[str, int] | None = None,
) -> DagLayout:
    """Lay out a DAG given its layers (`Graph.layers()`) and each step's upstream steps.

    Args:
        layers: columns of step names, left to right.
        upstream: step -> its upstream steps.
        conditional: steps with a `when=` predicate (their incoming edges are dashed).
        labels: step -> extra label width needed inside the box beyond the name (e.g. a counter).
    """
    conditional = conditional or set()
    labels = labels or {}
    column_of = {name: c for c, layer in enumerate(layers) for name in layer}
    grid: list[list[str]] = [list(layer) for layer in layers]
    up: dict[str, list[str]] = {name: [] for layer in layers for name in layer}
    down: dict[str, list[str]] = {name: [] for layer in layers for name in layer}
    segments: list[tuple[str, str, bool]] = []
    dummy = 0
    for name in column_of:
        for source in upstream.get(name, ()):
            if source not in column_of:
                continue
            previous = source
            for c in range(column_of[source] + 1, column_of[name]):
                dummy += 1
                hop = f"\0{dummy}"
                grid[c].append(hop)
                up[hop], down[hop] = [previous], []
                down[previous].append(hop)
                segments.append((previous, hop, False))
                previous = hop
            up[name].append(previous)
            down[previous].append(name)
            segments.append((previous, name, name in conditional))
    _order(grid, up, down)

    # Real steps first, lines of long edges below them; then pull each node towards the median row
    # of its upstream nodes (chains draw straight), keeping the column's order.
    for layer in grid:
        layer.sort(key=lambda n: n.startswith("\0"))
    top: dict[str, int] = {}
    mid: dict[str, int] = {}
    for layer in grid:
        floor = 0
        for name in layer:
            height = 1 if name.startswith("\0") else BOX_HEIGHT
            parents = sorted(mid[p] for p in up[name] if p in mid)
            want = parents[len(parents) // 2] - height // 2 if parents else floor
            top[name] = max(want, floor)
            mid[name] = top[name] + height // 2
            floor = top[name] + height + 1

    widths = []
    for layer in grid:
        real = [n for n in layer if not n.startswith("\0")]
        need = max((min(MAX_NAME, len(n)) + labels.get(n, 0) for n in real), default=MIN_NAME)
        widths.append(max(MIN_NAME, need) + 6)
    xs = [1]
    for width in widths[:-1]:
        xs.append(xs[-1] + width + GAP)

    result = DagLayout()
    for c, layer in enumerate(grid):
        result.columns.append([n for n in layer if not n.startswith("\0")])
        for name in layer:
            box = Box(name, xs[c], top[name], widths[c], c, name in conditional)
            if name.startswith("\0"):
                box.y = top[name] - 1
            result.boxes[name] = box
            if not name.startswith("\0"):
                for row in range(box.y, box.y + BOX_HEIGHT):
                    result.rows.setdefault(row, []).append(box)

    def mark(x: int, y: int, bits: int, dashed: bool = False) -> None:
        row = result.edges.setdefault(y, {})
        row[x] = row.get(x, 0) | bits
        if dashed:
            result.dashed.add((x, y))

    def hline(x1: int, x2: int, y: int, dashed: bool = False) -> None:
        for x in range(x1, x2 + 1):
            mark(x, y, (LEFT if x > x1 else 0) | (RIGHT if x < x2 else 0), dashed)

    lanes: dict[str, int] = {}
    lanes_used: dict[int, int] = {}
    """Column -> how many sources in it have a lane (sources share the gap's lanes in turn)."""
    edges = result.edges
    for source, target, dashed in segments:
        a, b = result.boxes[source], result.boxes[target]
        start = a.x + a.width
        end = b.x - 1
        if source.startswith("\0"):
            # A dummy is a horizontal line across its column.
            hline(a.x, start, a.mid)
        lane_count = GAP - 4
        if source not in lanes:
            used = lanes_used.get(a.column, 0)
            lanes_used[a.column] = used + 1
            lanes[source] = used % lane_count
        lane = lanes[source]
        lane_x = start + 1 + lane
        if a.mid == b.mid:
            hline(start, end, a.mid, dashed)
            mark(start, a.mid, LEFT)
        else:
            hline(start, lane_x, a.mid)
            mark(start, a.mid, LEFT)
            top, bottom = sorted((a.mid, b.mid))
            mark(lane_x, top, DOWN)
            # The vertical run of the edge, `mark` inlined: long edges of a big graph are most cells.
            for y in range(top + 1, bottom):
                row = edges.get(y)
                if row is None:
                    row = edges[y] = {}
                row[lane_x] = row.get(lane_x, 0) | UP | DOWN
            mark(lane_x, bottom, UP)
            hline(lane_x, end, b.mid, dashed)
        if target.startswith("\0"):
            mark(end, b.mid, RIGHT)
        else:
            result.arrows[(end, b.mid)] = "▷" if dashed else "▶"
    result.width = (xs[-1] + widths[-1] + 1) if grid else 0
    result.height = max((box.y + BOX_HEIGHT for box in result.boxes.values()), default=0)
    return result
