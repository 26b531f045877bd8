"""Provides the lanes of one gap between two columns of the DAG drawing: `Net` (a source's edges in the
gap), `split_shared` (a fan-out's branch into a shared arrival gets a lane of its own), `merge_fan_ins`
(the sources of a fan-in share one lane into their target) and `assign_lanes` (which vertical lane each
bent net runs in).

The rules that keep fan-in and fan-out readable are stated in `tui.data.layout`; this is the part
that orders and packs the lanes so they hold (a topological order of "must lie left of", then
first-fit packing of nets whose rows never meet).
"""

from __future__ import annotations

import bisect
import heapq


class Net:
    """A source's edges in one gap: where it leaves, its targets' rows, its lane (if it needs one).
    A fan-in's net (`merge_fan_ins`) has one target and further sources, `joins`, whose lines join
    its lane.

    `span` (the rows it meets, top and bottom) and `straight` (one target, on its own row) are
    worked out once: lane assignment asks for them again and again. A 10,000-step drawing makes
    ~20,000 nets, most of one target: a plain class with slots, no dataclass machinery per net."""

    __slots__ = ("source", "row", "targets", "joins", "lane", "span", "straight")

    def __init__(
        self,
        source: str,
        row: int,
        targets: list[tuple[str, int, bool]],
        joins: tuple[tuple[str, int], ...] = (),
    ) -> None:
        self.source = source
        self.row = row
        self.targets = targets
        self.joins = joins
        self.lane = -1
        if len(targets) == 1 and not joins:
            y = targets[0][1]
            self.span = (row, y) if row <= y else (y, row)
            self.straight = y == row
        else:
            rows = [row, *(r for _, r in joins), *(t[1] for t in targets)]
            self.span = min(rows), max(rows)
            self.straight = False

    def departures(self) -> list[tuple[str, int]]:
        """Each source of the net and the row its line leaves from."""
        return [(self.source, self.row), *self.joins]


def split_shared(sources: list[tuple[str, int, list[tuple[str, int, bool]]]]) -> list[Net]:
    """The nets of a gap from its sources (name, row, targets), a fan-out's branch into a step other
    lines also enter given its own net (so its own lane).

    A lane that joins a shared arrival and goes on to further targets draws a `┼` that reads both
    ways (do the other lines go on too?); a lane of its own ends where it joins.
    """
    arrivals: dict[int, int] = {}
    for _, _, targets in sources:
        for target in targets:
            y = target[1]
            arrivals[y] = arrivals.get(y, 0) + 1
    result: list[Net] = []
    add = result.append
    for source, row, targets in sources:
        if len(targets) < 2:
            add(Net(source, row, targets))
            continue
        shared: list[tuple[str, int, bool]] = []
        rest: list[tuple[str, int, bool]] = []
        for target in targets:
            y = target[1]
            (shared if arrivals[y] > 1 and y != row else rest).append(target)
        if not shared:
            add(Net(source, row, targets))
            continue
        for target in shared:
            add(Net(source, row, [target]))
        if rest:
            add(Net(source, row, rest))
    return result


def merge_fan_ins(nets: list[Net]) -> list[Net]:
    """The nets of a gap with the bent nets into one target merged into one, a lane shared by the
    sources of a fan-in: its lines join the lane, which leads only into the target (a fan-in of
    5,000 took 5,000 lanes, a drawing 5,000 cells wide). A source with another net in the gap (a
    fan-out's branch, `split_shared`) keeps its own lane: had its line gone on across the shared
    lane, the `┼` there would lead the other sources down the lane into its other targets."""
    leaving: dict[str, int] = {}
    for net in nets:
        leaving[net.source] = leaving.get(net.source, 0) + 1
    into: dict[str, list[Net]] = {}
    for net in nets:
        if len(net.targets) == 1 and not net.straight and leaving[net.source] == 1:
            into.setdefault(net.targets[0][0], []).append(net)
    merged: dict[int, Net | None] = {}
    """Net -> the fan-in's net it becomes (its first source's), or None (a later source's)."""
    for group in into.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda n: n.row)
        first = group[0]
        joins = tuple((n.source, n.row) for n in group[1:])
        merged[id(first)] = Net(first.source, first.row, first.targets, joins)
        merged.update((id(n), None) for n in group[1:])
    if not merged:
        return nets
    result = []
    for net in nets:
        kept = merged.get(id(net), net)
        if kept is not None:
            result.append(kept)
    return result


def assign_lanes(nets: list[Net]) -> int:
    """Give each bent net a lane; return how many lanes the gap needs.

    A net must lie left of every other net arriving at the row it leaves from (else its departing
    line would run into their arrival), and left of the others arriving at a row its lane passes
    on from; beyond that, nets whose rows never meet share a lane.
    """
    bent = [n for n in nets if not n.straight]
    if not bent:
        return 0
    # Nets by their index in `bent`.
    arriving: dict[int, list[int]] = {}
    for i, net in enumerate(bent):
        for target in net.targets:
            found = arriving.get(target[1])
            if found is None:
                arriving[target[1]] = [i]
            else:
                found.append(i)
    after: list[dict[int, None]] = [{} for _ in bent]
    """Net -> the nets that must lie right of it, in the order found (a set's order would vary)."""
    before_count = [0] * len(bent)
    for i, net in enumerate(bent):
        right = after[i]
        if len(net.targets) > 1:  # one target is at an end of the span
            # A net that joins a target's row and goes on past it comes first among those arriving
            # there, so the lines of the others never run through its lane (a `┼` reads both ways).
            top, bottom = net.span
            rows = [net.row, *[y for _, y, _ in net.targets if top < y < bottom]]
        else:
            rows = [net.row, *(r for _, r in net.joins)]
        for y in rows:
            for j in arriving.get(y, ()):
                if j != i and j not in right:
                    right[j] = None
                    before_count[j] += 1
    # Kahn's order, the ready net with the smallest span first (ties: the one ready first).
    order: list[int] = []
    ready = [(n.span, i, i) for i, n in enumerate(bent) if not before_count[i]]
    heapq.heapify(ready)
    readied = len(bent)
    done = [False] * len(bent)
    while len(order) < len(bent):
        if ready:
            index = heapq.heappop(ready)[2]
        else:  # a cycle (two nets each arriving where the other leaves): break it
            index = min((i for i in range(len(bent)) if not done[i]), key=lambda i: bent[i].span)
        if done[index]:
            continue
        done[index] = True
        order.append(index)
        for later in after[index]:
            before_count[later] -= 1
            if not before_count[later] and not done[later]:
                heapq.heappush(ready, (bent[later].span, readied, later))
                readied += 1
    # First fit: each lane's rows as disjoint spans sorted by their tops (`tops`, `bottoms`), so
    # whether a net's rows meet a lane's is one bisection (the span starting last above its bottom).
    floor = [0] * len(bent)
    tops: list[list[int]] = []
    bottoms: list[list[int]] = []
    bisect_right = bisect.bisect_right
    for index in order:
        net = bent[index]
        top, bottom = net.span
        lane = floor[index]  # never past the last lane: set from a lane that exists
        count = len(tops)
        while lane < count:
            spans = tops[lane]
            at = bisect_right(spans, bottom)
            if not at or bottoms[lane][at - 1] < top:
                spans.insert(at, top)
                bottoms[lane].insert(at, bottom)
                break
            lane += 1
        else:
            tops.append([top])
            bottoms.append([bottom])
        net.lane = lane
        for later in after[index]:
            if floor[later] <= lane:
                floor[later] = lane + 1
    return len(tops)
