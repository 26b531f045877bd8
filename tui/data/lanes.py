"""Provides the lanes of one gap between two columns of the DAG drawing: `Net` (a source's edges in the
gap), `split_shared` (a fan-out's branch into a shared arrival gets a lane of its own) and
`assign_lanes` (which vertical lane each bent net runs in).

The rules that keep fan-in and fan-out readable are stated in `tui.data.layout`; this is the part
that orders and packs the lanes so they hold (a topological order of "must lie left of", then
first-fit packing of nets whose rows never meet).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Net:
    """A source's edges in one gap: where it leaves, its targets' rows, its lane (if it needs one)."""

    source: str
    row: int
    targets: list[tuple[str, int, bool]]
    lane: int = -1

    @property
    def span(self) -> tuple[int, int]:
        rows = [self.row, *(y for _, y, _ in self.targets)]
        return min(rows), max(rows)

    @property
    def straight(self) -> bool:
        return len(self.targets) == 1 and self.targets[0][1] == self.row


def split_shared(nets: list[Net]) -> list[Net]:
    """Give a fan-out's branch into a step other lines also enter its own lane.

    A lane that joins a shared arrival and goes on to further targets draws a `┼` that reads both
    ways (do the other lines go on too?); a lane of its own ends where it joins.
    """
    arrivals: dict[int, int] = {}
    for net in nets:
        for _, y, _ in net.targets:
            arrivals[y] = arrivals.get(y, 0) + 1
    result: list[Net] = []
    for net in nets:
        if len(net.targets) < 2:
            result.append(net)
            continue
        shared = [t for t in net.targets if arrivals[t[1]] > 1 and t[1] != net.row]
        rest = [t for t in net.targets if t not in shared]
        if not shared or (len(shared) == 1 and not rest):
            result.append(net)
            continue
        result.extend(Net(net.source, net.row, [t]) for t in shared)
        if rest:
            result.append(Net(net.source, net.row, rest))
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
    arriving: dict[int, list[Net]] = {}
    for net in bent:
        for _, y, _ in net.targets:
            arriving.setdefault(y, []).append(net)
    after: dict[int, set[int]] = {id(n): set() for n in bent}
    before_count: dict[int, int] = {id(n): 0 for n in bent}

    def before(first: Net, second: Net) -> None:
        if first is not second and id(second) not in after[id(first)]:
            after[id(first)].add(id(second))
            before_count[id(second)] += 1

    for net in bent:
        for other in arriving.get(net.row, ()):
            before(net, other)
        # A net that joins a target's row and goes on past it comes first among those arriving
        # there, so the lines of the others never run through its lane (a `┼` reads both ways).
        top, bottom = net.span
        for _, y, _ in net.targets:
            if top < y < bottom:
                for other in arriving.get(y, ()):
                    before(net, other)
    by_id = {id(n): n for n in bent}
    order: list[Net] = []
    ready = sorted((n for n in bent if not before_count[id(n)]), key=lambda n: n.span)
    remaining = set(by_id)
    while remaining:
        if not ready:  # a cycle (two nets each arriving where the other leaves): break it
            ready = [min((by_id[i] for i in remaining), key=lambda n: n.span)]
        net = ready.pop(0)
        if id(net) not in remaining:
            continue
        remaining.discard(id(net))
        order.append(net)
        for later in after[id(net)]:
            before_count[later] -= 1
            if not before_count[later] and later in remaining:
                ready.append(by_id[later])
                ready.sort(key=lambda n: n.span)
    floor: dict[int, int] = {id(n): 0 for n in bent}
    used: list[list[tuple[int, int]]] = []
    for net in order:
        top, bottom = net.span
        lane = floor[id(net)]
        while lane < len(used) and any(not (b < top or a > bottom) for a, b in used[lane]):
            lane += 1
        if lane == len(used):
            used.append([])
        used[lane].append((top, bottom))
        net.lane = lane
        for later in after[id(net)]:
            floor[later] = max(floor[later], lane + 1)
    return len(used)
