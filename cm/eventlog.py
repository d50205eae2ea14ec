"""The event log as watchers see it: a bounded in-memory tail over the store.

Writers append under the CM's lock and notify; each watcher pulls from its
own cursor, so a slow watcher costs only its own thread and never blocks
the CM.  Watchers that fall behind the memory tail read from the store;
those behind the retention window get `OutOfRange`.
"""

from __future__ import annotations

import heapq
import threading
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from itertools import islice

from tashi.cm.store import Store
from tashi.v1 import resources_pb2 as pb

HOST_SCOPED = frozenset({"host", "instance"})


def index_keys(event: pb.Event) -> list[tuple[Hashable, ...]]:
    """The index entries of one event: its kind, and its kind per host it concerns."""
    kind = event.WhichOneof("subject") or ""
    keys: list[tuple[Hashable, ...]] = [(kind,)]
    if kind in HOST_SCOPED:
        keys.extend((kind, h) for h in event.host_ids)
    return keys


class OutOfRange(Exception):
    pass


class EventLog:
    def __init__(self, store: Store, first_seq: int, last_seq: int,
                 recent: list[tuple[int, bytes]], retention: int, memory: int = 100_000) -> None:
        self._store = store
        self._cond = threading.Condition()
        self._memory = memory
        self._tail: deque[pb.Event] = deque(maxlen=memory)
        # Seqs of the tail's events by index key (kind, or kind and host), so a
        # filtered watcher reads only what it asked for instead of scanning all.
        self._index: dict[tuple[Hashable, ...], list[int]] = {}
        self._add([pb.Event.FromString(body) for _seq, body in recent[-memory:]])
        self.first_seq = first_seq
        self.last_seq = last_seq
        self.retention = retention
        self.closed = False
        self.watchers = 0

    def publish(self, events: list[pb.Event]) -> None:
        """Called after the store committed `events` (in seq order)."""
        if not events:
            return
        with self._cond:
            self._add(events)
            self.last_seq = events[-1].seq
            if self.first_seq > events[0].seq:
                self.first_seq = events[0].seq
            self._cond.notify_all()

    def _add(self, events: list[pb.Event]) -> None:
        self._tail.extend(events)
        low = self._tail[0].seq if self._tail else 0
        for event in events:
            for key in index_keys(event):
                seqs = self._index.setdefault(key, [])
                seqs.append(event.seq)
                if seqs[len(seqs) // 2] < low:  # half of it fell out of the tail
                    del seqs[:bisect_right(seqs, low - 1)]

    def trimmed_to(self, first_seq: int) -> None:
        with self._cond:
            self.first_seq = max(self.first_seq, first_seq)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def _check_retained(self, since: int) -> None:
        if since < self.first_seq - 1:
            raise OutOfRange(
                f"events after {since} are no longer retained (oldest kept is "
                f"{self.first_seq}): list again and watch from the seq the list answers"
            )

    def check_since(self, since: int) -> None:
        with self._cond:
            self._check_retained(since)
            if since > self.last_seq:
                raise OutOfRange(
                    f"since {since} is ahead of the cluster manager's last event "
                    f"{self.last_seq}: its history was reset; list again"
                )

    def read_after(self, since: int, limit: int, timeout: float) -> list[pb.Event]:
        """Events with seq > since, at most `limit`; waits up to `timeout` for new ones."""
        with self._cond:
            if self.last_seq <= since and not self.closed:
                self._cond.wait(timeout)
            self._check_retained(since)
            if self.last_seq <= since:
                return []
            if self._tail and self._tail[0].seq <= since + 1:
                start = since + 1 - self._tail[0].seq
                end = min(len(self._tail), start + limit)
                return [self._tail[i] for i in range(start, end)]
        rows = self._store.events_after(since, limit)
        return [pb.Event.FromString(body) for _seq, body in rows]

    def read_matching(self, since: int, limit: int, timeout: float,
                      keys: Iterable[tuple[Hashable, ...]],
                      passes: Callable[[pb.Event], bool]) -> tuple[list[pb.Event], int]:
        """Events after `since` under any of `keys` (at most `limit`), and the seq
        read up to.  From the tail's index, so the cost follows what matches, not
        the whole log; `passes` filters the store's events behind the tail."""
        with self._cond:
            if self.last_seq <= since and not self.closed:
                self._cond.wait(timeout)
            self._check_retained(since)
            last = self.last_seq
            if last <= since:
                return [], since
            if self._tail and self._tail[0].seq <= since + 1:
                low = self._tail[0].seq
                runs = []
                for key in keys:
                    seqs = self._index.get(key)
                    if seqs:
                        start = bisect_right(seqs, max(since, low - 1))
                        runs.append(islice(seqs, start, None))
                chosen = list(islice(heapq.merge(*runs), limit))
                read_to = chosen[-1] if len(chosen) == limit else last
                return [self._tail[s - low] for s in chosen], read_to
        rows = self._store.events_after(since, limit)
        events = [pb.Event.FromString(body) for _seq, body in rows]
        return [e for e in events if passes(e)], (events[-1].seq if events else since)
