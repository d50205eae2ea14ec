"""Following the cluster manager's event stream into the ledger.

The shared `Informer` does the following: it starts whether or not the
cluster manager answers, waits for it, and resumes whenever the stream
breaks (a CM restart) from the last sequence it handed on, starting from
the last sequence the ledger committed.  OUT_OF_RANGE (the ledger fell
behind the CM's retention, or the CM's history was reset) relists the
instances, and the ledger records the gap.

The informer's thread only queues; this one commits, merging the batches
that queue up meanwhile into one transaction: when the ledger is behind it
catches up in large transactions, when it is not each event commits at once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from queue import Empty, Full, Queue

from tashi.accounting.ledger import Ledger
from tashi.accounting.timeutil import now_ns
from tashi.runtime.client import ClusterClient, TashiError
from tashi.runtime.informer import INSTANCE, Informer, Listing
from tashi.runtime.tls import Tls
from tashi.v1 import accounting_pb2 as apb
from tashi.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Relisted:
    listing: Listing
    reason: str


_Item = list[pb.Event] | _Relisted | None


class Follower:
    def __init__(self, ledger: Ledger, cm_address: str, user: str = "root",
                 batch: int = 1000, commit_events: int = 10_000,
                 retry_seconds: float = 0.5, tls: Tls | None = None) -> None:
        self.ledger = ledger
        self.commit_events = commit_events
        self.cm_address = cm_address
        self._queue: Queue[_Item] = Queue(maxsize=64)
        self._stop = threading.Event()
        self._client = ClusterClient(cm_address, user, tls=tls)
        # Every event is booked; a relist needs only the instances.
        self.informer = Informer(self._client, self, listed=[INSTANCE], since=ledger.seq,
                                 max_batch=batch, retry_seconds=retry_seconds,
                                 name="accounting")
        self.connected = self.informer.connected
        self._thread = threading.Thread(target=self.run, name="follower", daemon=True)

    def start(self) -> None:
        self.informer.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.informer.stop()
        self._queue.put(None)  # wakes the committing thread (the informer no longer puts)
        self._thread.join(timeout=10)
        self._client.close()

    # -- the informer's handler (its thread) ----------------------------------------
    def on_list(self, listing: Listing, reason: str) -> None:
        self._put(_Relisted(listing, reason))

    def on_events(self, events: list[pb.Event]) -> None:
        self._put(events)

    def _put(self, item: _Item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except Full:
                continue

    # -- committing (this thread) ------------------------------------------------------
    def run(self) -> None:
        item: _Item = self._queue.get()
        while item is not None:
            pending: list[pb.Event] = []
            while isinstance(item, list):
                pending.extend(item)
                if len(pending) >= self.commit_events:
                    item = []  # commit this much, then read on
                    break
                try:
                    item = self._queue.get_nowait()
                except Empty:
                    item = []
                    break
            if pending:
                self.ledger.apply(pending)
            if isinstance(item, _Relisted):
                log.warning("event history out of range (%s): relisting instances", item.reason)
                self.ledger.relist(item.listing.instances, item.listing.seq, now_ns(),
                                   item.reason)
            elif item is None:
                return
            item = self._queue.get()


class Reconciler:
    """The safety net: every `period` seconds, compare the ledger with ListInstances."""

    def __init__(self, ledger: Ledger, cm_address: str, user: str, period: float,
                 catch_up_seconds: float = 30.0, tls: Tls | None = None) -> None:
        self.ledger = ledger
        self.cm_address = cm_address
        self.user = user
        self.tls = tls
        self.period = period
        self.catch_up_seconds = catch_up_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="reconciler", daemon=True)

    def start(self) -> None:
        if self.period > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                drifts = self.reconcile_once()
            except TashiError as exc:
                log.info("reconcile skipped: cluster manager unavailable (%s)", exc)
                continue
            if drifts is None:
                log.info("reconcile skipped: the ledger did not catch up with the listing")
            else:
                log.info("reconcile: %d drift(s) recorded", len(drifts))

    def reconcile_once(self) -> list[apb.LedgerDrift] | None:
        with ClusterClient(self.cm_address, self.user, tls=self.tls) as client:
            instances, first_seq, last_seq = client.list_instances_at()
        waited = 0.0
        while self.ledger.seq < last_seq:
            if waited >= self.catch_up_seconds or self._stop.is_set():
                return None
            self._stop.wait(0.1)
            waited += 0.1
        return self.ledger.reconcile(instances, first_seq, now_ns())
