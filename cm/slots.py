"""Bounded slots for long calls: streams and transfers that each hold a thread
for as long as they last.  Without a bound, idle or slow ones could take every
thread and starve the unary calls (heartbeats among them)."""

from __future__ import annotations

import threading
from collections import Counter

from tashi.runtime.errors import exhausted


class Slots:
    """Open things of several kinds, bounded in all and per caller and kind;
    every kind counts toward the one total."""

    def __init__(self, total: int, per_caller: int, what: str) -> None:
        self.total = total
        self.per_caller = per_caller
        self.what = what  # how the total is named in a refusal
        self.open: Counter[str] = Counter()  # by caller, every kind
        self._kinds: Counter[tuple[str, str]] = Counter()  # by caller and kind
        self._lock = threading.Lock()

    def take(self, who: str, kind: str) -> None:
        with self._lock:
            if self._kinds[who, kind] >= self.per_caller:
                raise exhausted(f"{who} already holds {self.per_caller} open {kind}; close "
                                "one first")
            if sum(self.open.values()) >= self.total:
                raise exhausted(f"the cluster manager serves {self.total} {self.what} at "
                                "most; try again later")
            self.open[who] += 1
            self._kinds[who, kind] += 1

    def give(self, who: str, kind: str) -> None:
        with self._lock:
            self.open[who] -= 1
            if self.open[who] <= 0:
                del self.open[who]
            self._kinds[who, kind] -= 1
            if self._kinds[who, kind] <= 0:
                del self._kinds[who, kind]
