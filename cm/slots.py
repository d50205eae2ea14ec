"""Bounded slots for what holds a server thread: streams and transfers for as
long as they last, and unary calls while they wait for the cluster's lock.
Without a bound, idle or slow ones could take every thread and starve the
others: heartbeats above all, whose hosts would expire behind them."""

from __future__ import annotations

import threading
from collections import Counter

from tashi.runtime.errors import busy, exhausted


class Slots:
    """Open things of several kinds, bounded in all and per caller and kind;
    every kind counts toward the one total."""

    def __init__(self, total: int, per_caller: int, what: str, retry_after: float = 0.0
                 ) -> None:
        """`retry_after` > 0: a refusal says to send the same call again after
        about that long (RpcClient.call does), for slots held only briefly."""
        self.total = total
        self.per_caller = per_caller
        self.what = what  # how the total is named in a refusal
        self.retry_after = retry_after
        self.open: Counter[str] = Counter()  # by caller, every kind
        self._kinds: Counter[tuple[str, str]] = Counter()  # by caller and kind
        self._in_all = 0
        self._lock = threading.Lock()

    def _refusal(self, message: str) -> Exception:
        return busy(message, self.retry_after) if self.retry_after else exhausted(message)

    def take(self, who: str, kind: str) -> None:
        with self._lock:
            if self._kinds[who, kind] >= self.per_caller:
                raise self._refusal(f"{who} already holds {self.per_caller} open {kind}; "
                                    "close one first")
            if self._in_all >= self.total:
                raise self._refusal(f"the cluster manager serves {self.total} {self.what} at "
                                    "most; try again later")
            self._in_all += 1
            self.open[who] += 1
            self._kinds[who, kind] += 1

    def give(self, who: str, kind: str) -> None:
        with self._lock:
            self._in_all -= 1
            self.open[who] -= 1
            if self.open[who] <= 0:
                del self.open[who]
            self._kinds[who, kind] -= 1
            if self._kinds[who, kind] <= 0:
                del self._kinds[who, kind]
