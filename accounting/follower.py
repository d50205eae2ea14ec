"""Following the cluster manager's event stream into the ledger.

Starts whether or not the cluster manager answers, waits for it, and
reconnects whenever the stream breaks (a CM restart): every (re)connection
watches from the last sequence the ledger committed.  OUT_OF_RANGE (the
ledger fell behind the CM's retention, or the CM's history was reset)
relists the instances and records the gap.
"""

from __future__ import annotations

import logging
import threading
from queue import Empty, Full, Queue

import grpc

from tashi.accounting.ledger import Ledger
from tashi.accounting.timeutil import now_ns
from tashi.runtime.client import ClusterClient, TashiError
from tashi.v1 import accounting_pb2 as apb
from tashi.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

_MORE = object()  # nothing queued just now: commit what we have, then wait


class Follower:
    def __init__(self, ledger: Ledger, cm_address: str, user: str = "root",
                 batch: int = 1000, commit_events: int = 10_000,
                 retry_seconds: float = 0.5) -> None:
        self.ledger = ledger
        self.commit_events = commit_events
        self.cm_address = cm_address
        self.user = user
        self.batch = batch
        self.retry_seconds = retry_seconds
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._client: ClusterClient | None = None
        self._thread = threading.Thread(target=self.run, name="follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._client is not None:
                self._client.close()
        self._thread.join(timeout=10)

    def run(self) -> None:
        last_error = ""
        while not self._stop.is_set():
            client = self._connect()
            if client is None:
                return
            try:
                self._follow(client)
                last_error = ""
            except TashiError as exc:
                if self._stop.is_set():
                    return
                if str(exc) != last_error:
                    log.warning("lost the cluster manager at %s (%s); reconnecting",
                                self.cm_address, exc)
                    last_error = str(exc)
                self._stop.wait(self.retry_seconds)
            finally:
                self.connected.clear()
                client.close()

    def _connect(self) -> ClusterClient | None:
        said_waiting = False
        while not self._stop.is_set():
            client = ClusterClient(self.cm_address, self.user)
            with self._lock:
                self._client = client
            if self._stop.is_set():
                client.close()
                return None
            try:
                client.wait_ready(timeout=1.0)
            except (TashiError, grpc.RpcError, ValueError) as exc:
                client.close()
                if not said_waiting:
                    log.info("waiting for the cluster manager at %s (%s)", self.cm_address, exc)
                    said_waiting = True
                self._stop.wait(self.retry_seconds)
                continue
            log.info("connected to the cluster manager at %s; watching after seq %d",
                     self.cm_address, self.ledger.seq)
            self.connected.set()
            return client
        return None

    def _follow(self, client: ClusterClient) -> None:
        while not self._stop.is_set():
            try:
                self._pump(client)
                return
            except TashiError as exc:
                if exc.code != grpc.StatusCode.OUT_OF_RANGE:
                    raise
                log.warning("event history out of range (%s): relisting instances", exc.message)
                instances, first_seq, _last = client.list_instances_at()
                self.ledger.relist(instances, first_seq, now_ns(), exc.message)

    def _pump(self, client: ClusterClient) -> None:
        """Read the stream in one thread and commit in this one, merging the messages
        that queue up meanwhile into one transaction: when the ledger is behind it
        catches up in large transactions, when it is not each event commits at once."""
        queue: Queue[list[pb.Event] | BaseException | None] = Queue(maxsize=64)
        done = threading.Event()

        def put(item: list[pb.Event] | BaseException | None) -> None:
            while not done.is_set():
                try:
                    queue.put(item, timeout=0.5)
                    return
                except Full:
                    continue

        def read() -> None:
            try:
                for events in client.watch_events(self.ledger.seq, max_batch=self.batch):
                    put(events)
                put(None)
            except BaseException as exc:  # handed to the committing thread
                put(exc)

        reader = threading.Thread(target=read, name="watch", daemon=True)
        reader.start()
        try:
            item: object = queue.get()
            while True:
                pending: list[pb.Event] = []
                while isinstance(item, list):
                    pending.extend(item)
                    if len(pending) >= self.commit_events:
                        item = _MORE
                        break
                    try:
                        item = queue.get_nowait()
                    except Empty:
                        item = _MORE
                if pending:
                    self.ledger.apply(pending)
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                item = queue.get()
        finally:
            done.set()


class Reconciler:
    """The safety net: every `period` seconds, compare the ledger with ListInstances."""

    def __init__(self, ledger: Ledger, cm_address: str, user: str, period: float,
                 catch_up_seconds: float = 30.0) -> None:
        self.ledger = ledger
        self.cm_address = cm_address
        self.user = user
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
        with ClusterClient(self.cm_address, self.user) as client:
            instances, first_seq, last_seq = client.list_instances_at()
        waited = 0.0
        while self.ledger.seq < last_seq:
            if waited >= self.catch_up_seconds or self._stop.is_set():
                return None
            self._stop.wait(0.1)
            waited += 0.1
        return self.ledger.reconcile(instances, first_seq, now_ns())
