"""Group commit: changes that wait for the cluster's lock at the same time are
made one after another in one turn of the lock by one of their threads, and
written in one store transaction.

Why: at 1,000 hosts with 100 creates and 100 deletes a second (bench_fleet),
every change (a call, a start's answer, a report) took its own turn of the lock
and its own SQLite commit.  About 80 threads waited for the lock at any moment;
the store's commits held it a third of the time, and handing it from one thread
to the next (a wake-up on a busy machine) much of the rest, while the CM used
40% of a core.  Here a turn of the lock serves every change queued meanwhile,
with one commit and one hand-over.

How: a caller queues its job; if no thread leads, it leads: it takes the
lock and runs queued jobs under it (`run_group`), wakes their callers, and
hands the lead to the next job queued, whose thread makes the next turn.
Each caller then does what its change asked for after the lock (`Txn.after`)
in its own thread, as before.

Calls first: a turn takes the jobs of calls (a user's create, the scheduler's
placements, a node's report) before the CM's own changes (a start's answer,
the liveness monitor's), and takes no new job once it has lasted TURN_SECONDS,
so a call waits for the rest of one short turn, not behind every answer queued
(bench_fleet at 1,000 hosts: turns of up to 256 answers, held 0.4 s on
average while the fill ran, kept a CreateInstance waiting for seconds).  The
first job of each turn is the oldest queued, so the CM's own changes go on
under a flood of calls.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tashi.runtime.errors import unavailable

log = logging.getLogger(__name__)

# Jobs in one group at most, so a leader's own caller is never held long.
MAX_GROUP = 256
# A turn takes no new job once it has lasted this long (it always takes one).
TURN_SECONDS = 0.05
# A turn longer than this is logged with its longest change.
SLOW_TURN_SECONDS = 1.0


# Upper bounds (seconds) of the turns' and waits' histograms.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Counts by upper bound (the last: above every bound) and the sum; written by
    the leading thread only, read by scrapes (tashi_cm_commit_*_seconds)."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds


class Job:
    """One change waiting for the lock: `fn` runs under it; its result or error
    reaches the caller once the group it ran in is stored."""

    __slots__ = ("fn", "call", "what", "result", "error", "finished", "queued", "_wake")

    def __init__(self, fn: Callable[[], Any], call: bool = False, what: str = "") -> None:
        self.fn = fn
        self.call = call  # a caller's change, taken before the CM's own
        self.what = what  # named in the log of a slow turn
        self.queued = time.monotonic()
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = False
        self._wake = threading.Event()

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class Combiner:
    """Runs jobs in turns under `lock`; `run_group(jobs)` takes jobs from the
    iterable as it goes and must give each one it took a result or an error and
    mark it finished."""

    def __init__(self, lock: threading.RLock,
                 run_group: Callable[[Iterable[Job]], None]) -> None:
        self._lock = lock
        self._run_group = run_group
        self._calls: deque[Job] = deque()
        self._own: deque[Job] = deque()  # the CM's own changes
        self._queue_lock = threading.Lock()
        self._leading = False
        # How long each turn held the lock (its jobs and their write), and how long
        # each job waited for the turn it ran in (calls', the CM's own).
        self.turns = Histogram()
        self.waits = {True: Histogram(), False: Histogram()}

    def run(self, fn: Callable[[], Any], call: bool = False, what: str = "") -> Any:
        job = Job(fn, call, what)
        with self._queue_lock:
            (self._calls if call else self._own).append(job)
            lead = not self._leading
            self._leading = True
        if not lead:
            job._wake.wait()
        if not job.finished:
            self._lead(job)
        return job.outcome()

    def queued(self) -> int:
        """Jobs waiting for a turn."""
        with self._queue_lock:
            return len(self._calls) + len(self._own)

    def _next(self, began: float, taken: int) -> Job | None:
        """The next job of the turn that began at `began` with `taken` jobs so far:
        the oldest queued first, then calls before the CM's own changes; none once
        the turn is full or has lasted TURN_SECONDS."""
        if taken >= MAX_GROUP or (taken and time.monotonic() - began >= TURN_SECONDS):
            return None
        with self._queue_lock:
            calls, own = self._calls, self._own
            if not taken and calls and own:
                return (calls if calls[0].queued <= own[0].queued else own).popleft()
            queue = calls or own
            return queue.popleft() if queue else None

    def _turn(self, began: float, jobs: list[Job], spent: list[Any]) -> Iterator[Job]:
        """The jobs of one turn, as `run_group` asks for them (it asks for the next
        once the one before is done); `spent`: [seconds in all jobs, the longest's
        seconds, its name]."""
        while (job := self._next(began, len(jobs))) is not None:
            now = time.monotonic()
            self.waits[job.call].observe(now - job.queued)
            jobs.append(job)
            yield job
            took = time.monotonic() - now
            spent[0] += took
            if took >= spent[1]:
                spent[1:] = [took, job.what or "unnamed"]

    def _turned(self, began: float, jobs: list[Job], spent: list[Any]) -> None:
        took = time.monotonic() - began
        self.turns.observe(took)
        if took > SLOW_TURN_SECONDS:
            log.warning("a turn of the cluster's lock took %.2fs: %d changes made in %.2fs, "
                        "the longest %s (%.2fs); the rest storing them", took, len(jobs),
                        spent[0], spent[2], spent[1])

    def _lead(self, own: Job) -> None:
        """Run turns until `own` is done, then pass the lead on (or drop it)."""
        failure: BaseException | None = None
        while failure is None:
            jobs: list[Job] = []
            spent: list[Any] = [0.0, 0.0, "none"]
            try:
                with self._lock:
                    began = time.monotonic()
                    try:
                        self._run_group(self._turn(began, jobs, spent))
                    finally:
                        self._turned(began, jobs, spent)
            except BaseException as exc:  # noqa: BLE001 - passed on below, after the hand-over
                failure = exc
            for job in jobs:
                if not job.finished:  # run_group failed outright: never leave a caller waiting
                    job.error = unavailable("the cluster manager could not make this change; "
                                            "nothing was changed")
                    job.finished = True
                if job is not own:
                    job._wake.set()
            if own.finished:
                break
        with self._queue_lock:
            for queue in (self._calls, self._own):
                if own in queue:  # only after a failure: this caller hears of it, not run
                    queue.remove(own)
            following = self._calls or self._own
            if following:
                following[0]._wake.set()  # it finds itself unfinished: it leads
            else:
                self._leading = False
        if failure is not None:
            raise failure


class Group:
    """What the jobs of one turn of the lock staged, to be written together, and
    how to take it back out of memory if the store refuses it."""

    def __init__(self, last_seq: int) -> None:
        self.seq = last_seq  # the last event seq given out
        self.changes: dict[tuple[str, int], bytes | None] = {}  # latest body, None deleted
        self.events: list[Any] = []
        self.requests: list[tuple[str, str, bytes]] = []
        self.answers: dict[str, tuple[str, bytes]] = {}  # by request id, for a repeat in it
        self.meta: dict[str, int] = {}
        # What memory held before each change applied, oldest first: (kind, id,
        # object or None), and meta keys' values before (None: absent).
        self.undo: list[tuple[str, int, Any]] = []
        self.meta_before: dict[str, int | None] = {}
        self.jobs: list[Job] = []  # whose outcome waits on this group's write
        self.txns = 0

    def empty(self) -> bool:
        return not (self.changes or self.events or self.requests or self.meta)
