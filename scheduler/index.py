"""Capacity index: the schedulable hosts bucketed by (VM count, free cores, free memory).

A decision walks the buckets in policy order and only looks at hosts that
have room, so its cost depends on how many distinct (count, cores, memory)
combinations exist, not on how many hosts there are: 10,000 identical hosts
are one bucket.  Within a bucket every host ties on the policy key; the walk
starts at a random member so that two schedulers deciding from the same
view rarely propose the same host.

Each policy has its own three-level tree over the same buckets, its levels
in the order of that policy's sort key (scorers.py):
- spread: distinct counts (fewest first) -> free cores (most first) -> free
  memory (most first);
- densePack: distinct free cores (fewest first) -> free memory (least first)
  -> counts (most first).
The core and memory levels are cut at the VM's size with a bisection, so
hosts without room are never visited.  A bucket is a cell of host ids (a
list with a position map: O(1) add, remove and random start).
"""

from __future__ import annotations

import random
from bisect import bisect_left, insort
from collections.abc import Iterator

from tashi.runtime import fit
from tashi.scheduler.model import Policy

Key = tuple[int, int, int]  # (count, free cores, free memory)


class _Cell:
    __slots__ = ("items", "pos")

    def __init__(self) -> None:
        self.items: list[int] = []
        self.pos: dict[int, int] = {}

    def add(self, item: int) -> None:
        self.pos[item] = len(self.items)
        self.items.append(item)

    def discard(self, item: int) -> None:
        i = self.pos.pop(item)
        last = self.items.pop()
        if last != item:
            self.items[i] = last
            self.pos[last] = i

    def __len__(self) -> int:
        return len(self.items)


class _Tree:
    """Sorted distinct bucket keys, levelled in one order of the key's fields.

    `order` names the key field (0 count, 1 cores, 2 memory) at each level and
    `descending` whether that level is walked largest first.
    """

    def __init__(self, order: Key, descending: tuple[bool, bool, bool]) -> None:
        self.order = order
        self.descending = descending
        self.top: list[int] = []
        self.mid: dict[int, list[int]] = {}
        self.low: dict[tuple[int, int], list[int]] = {}

    def _levels(self, key: Key) -> Key:
        a, b, c = self.order
        return key[a], key[b], key[c]

    def add(self, key: Key) -> None:
        a, b, c = self._levels(key)
        lows = self.low.get((a, b))
        if lows is None:
            lows = self.low[(a, b)] = []
            mids = self.mid.get(a)
            if mids is None:
                mids = self.mid[a] = []
                insort(self.top, a)
            insort(mids, b)
        insort(lows, c)

    def drop(self, key: Key) -> None:
        a, b, c = self._levels(key)
        lows = self.low[(a, b)]
        del lows[bisect_left(lows, c)]
        if lows:
            return
        del self.low[(a, b)]
        mids = self.mid[a]
        del mids[bisect_left(mids, b)]
        if mids:
            return
        del self.mid[a]
        del self.top[bisect_left(self.top, a)]

    def walk(self, floor: Key) -> Iterator[Key]:
        """Bucket keys whose fields are all >= `floor`'s, best first."""
        fa, fb, fc = self._levels(floor)
        da, db, dc = self.descending
        back = self.order.index(0), self.order.index(1), self.order.index(2)
        top = self.top
        for a in _ordered(top, fa, da):
            mids = self.mid[a]
            for b in _ordered(mids, fb, db):
                lows = self.low[(a, b)]
                for c in _ordered(lows, fc, dc):
                    levels = (a, b, c)
                    yield levels[back[0]], levels[back[1]], levels[back[2]]


def _ordered(keys: list[int], floor: int, descending: bool) -> Iterator[int]:
    lo = bisect_left(keys, floor)
    if descending:
        for i in range(len(keys) - 1, lo - 1, -1):
            yield keys[i]
    else:
        for i in range(lo, len(keys)):
            yield keys[i]


class CapacityIndex:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._cells: dict[Key, _Cell] = {}
        self._where: dict[int, Key] = {}
        self._trees = {
            # fewest VMs, then most free cores, then most free memory
            Policy.SPREAD: _Tree((0, 1, 2), (False, True, True)),
            # fewest free cores, then least free memory, then most VMs
            Policy.DENSE_PACK: _Tree((1, 2, 0), (False, False, True)),
        }

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, host_id: int) -> bool:
        return host_id in self._where

    def put(self, host_id: int, count: int, free_cores: int, free_memory_mib: int) -> None:
        """Insert a host or move it to the bucket of its new usage."""
        key = (count, free_cores, free_memory_mib)
        old = self._where.get(host_id)
        if old == key:
            return
        if old is not None:
            self._drop(host_id, old)
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = _Cell()
            for tree in self._trees.values():
                tree.add(key)
        cell.add(host_id)
        self._where[host_id] = key

    def remove(self, host_id: int) -> None:
        old = self._where.get(host_id)
        if old is not None:
            self._drop(host_id, old)

    def _drop(self, host_id: int, key: Key) -> None:
        del self._where[host_id]
        cell = self._cells[key]
        cell.discard(host_id)
        if cell.items:
            return
        del self._cells[key]
        for tree in self._trees.values():
            tree.drop(key)

    def candidates(self, cores: int, memory_mib: int, policy: Policy) -> Iterator[int]:
        """Hosts with at least this much free, best first for `policy`.

        Do not change the index while iterating: take what you need, then
        update.
        """
        for key in self._trees[policy].walk((0, cores, memory_mib)):
            items = self._cells[key].items
            n = len(items)
            start = self._rng.randrange(n) if n > 1 else 0
            for i in range(n):
                yield items[(start + i) % n]

    def shortfall(self, cores: int, memory_mib: int) -> tuple[int, int]:
        """How many indexed hosts lack free cores, and how many have the cores but
        lack memory, for a VM of this size (for the reason a VM is Held)."""
        lack_cores = lack_memory = 0
        for (_count, free_cores, free_mem), cell in self._cells.items():
            short = fit.shortfall(free_cores, free_mem, cores, memory_mib)
            if short is None:
                continue
            if short.resource == "cores":
                lack_cores += len(cell)
            else:
                lack_memory += len(cell)
        return lack_cores, lack_memory

    def any_fits(self, cores: int, memory_mib: int) -> bool:
        return next(self.candidates(cores, memory_mib, Policy.DENSE_PACK), None) is not None
