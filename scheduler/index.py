"""Capacity index: the schedulable hosts bucketed by (VM count, free cores, free memory).

A decision walks the buckets in policy order and only looks at hosts that
have room, so its cost depends on how many distinct (count, cores, memory)
combinations exist, not on how many hosts there are: 10,000 identical hosts
are one bucket.  Within a bucket every host ties on the policy key; the walk
starts at a random member so that two schedulers deciding from the same
view rarely propose the same host.

Levels: sorted distinct counts -> per count, sorted distinct free cores ->
per (count, cores), sorted distinct free memory -> a cell of host ids (a
list with a position map: O(1) add, remove and random start).
"""

from __future__ import annotations

import random
from bisect import bisect_left, insort
from collections.abc import Iterator

from tashi.runtime import fit
from tashi.scheduler.model import Policy

Key = tuple[int, int, int]


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


class CapacityIndex:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._counts: list[int] = []
        self._cores: dict[int, list[int]] = {}
        self._mems: dict[tuple[int, int], list[int]] = {}
        self._cells: dict[Key, _Cell] = {}
        self._where: dict[int, Key] = {}

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
            pair = (count, free_cores)
            mems = self._mems.get(pair)
            if mems is None:
                mems = self._mems[pair] = []
                cores = self._cores.get(count)
                if cores is None:
                    cores = self._cores[count] = []
                    insort(self._counts, count)
                insort(cores, free_cores)
            insort(mems, free_memory_mib)
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
        count, free_cores, free_mem = key
        mems = self._mems[(count, free_cores)]
        del mems[bisect_left(mems, free_mem)]
        if mems:
            return
        del self._mems[(count, free_cores)]
        cores = self._cores[count]
        del cores[bisect_left(cores, free_cores)]
        if cores:
            return
        del self._cores[count]
        del self._counts[bisect_left(self._counts, count)]

    def candidates(self, cores: int, memory_mib: int, policy: Policy) -> Iterator[int]:
        """Hosts with at least this much free, best first for `policy`.

        Do not change the index while iterating: take what you need, then
        update.
        """
        spread = policy is Policy.SPREAD
        counts = self._counts
        for ci in range(len(counts)) if spread else range(len(counts) - 1, -1, -1):
            count = counts[ci]
            core_keys = self._cores[count]
            lo = bisect_left(core_keys, cores)
            core_range = range(len(core_keys) - 1, lo - 1, -1) if spread \
                else range(lo, len(core_keys))
            for ki in core_range:
                free_cores = core_keys[ki]
                mem_keys = self._mems[(count, free_cores)]
                mlo = bisect_left(mem_keys, memory_mib)
                mem_range = range(len(mem_keys) - 1, mlo - 1, -1) if spread \
                    else range(mlo, len(mem_keys))
                for mi in mem_range:
                    items = self._cells[(count, free_cores, mem_keys[mi])].items
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
