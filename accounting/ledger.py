"""The durable usage ledger.

Every batch of events is one SQLite transaction holding the events as
received, the billed intervals they open and close, each touched
instance's new view and the last event sequence.  A crash at any point
therefore leaves either the whole batch or none of it, and the stream
resumes after the last committed sequence: no gap, no double count.

The in-memory caches (instance views, host names) change only after a
commit; a failed transaction leaves them as they were.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tashi.accounting import schema
from tashi.accounting.curves import HOST, USER, CurveKey, Curves
from tashi.accounting.phases import Phase, is_stable, phase_of
from tashi.accounting.spans import SpanChanges, Spans
from tashi.accounting.timeutil import ns_to_ts, ts_to_ns
from tashi.accounting.views import VIEW_COLUMNS, InstanceView
from tashi.v1 import accounting_pb2 as apb
from tashi.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

KIND_EVENT = apb.LEDGER_ENTRY_KIND_EVENT
KIND_GAP = apb.LEDGER_ENTRY_KIND_GAP
KIND_DRIFT = apb.LEDGER_ENTRY_KIND_DRIFT


@dataclass
class _Batch:
    """What one transaction writes, and the views it leaves behind."""

    next_interval: int
    views: dict[int, InstanceView] = field(default_factory=dict)
    hosts: dict[int, str] = field(default_factory=dict)
    ledger_rows: list[tuple[object, ...]] = field(default_factory=list)
    # New intervals by id: [id, instance_id, owner, name, host_id, host_name, phase,
    # cores, memory_mib, start_ns, end_ns]; an interval closed in the same batch
    # is inserted already closed.
    new_intervals: dict[int, list[Any]] = field(default_factory=dict)
    # New ends of existing intervals, applied in order, and the latest by id.
    ends: list[tuple[int, int]] = field(default_factory=list)
    end_of: dict[int, int] = field(default_factory=dict)
    # Changes to the usage curves and billed spans.
    steps: list[tuple[CurveKey, int, int, int, int]] = field(default_factory=list)
    spans: SpanChanges = field(default_factory=SpanChanges)


def _serialize(msg: object) -> bytes:
    return msg.SerializeToString(deterministic=True)  # type: ignore[attr-defined,no-any-return]


class Ledger:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._conn = schema.connect(path)
        schema.create(self._conn)
        self._local = threading.local()
        self._load()

    # -- state ---------------------------------------------------------------
    def _load(self) -> None:
        conn = self._conn
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        self.seq: int = meta.get("last_seq", 0)
        self.last_event_ns: int = meta.get("last_event_ns", 0)
        self._views: dict[int, InstanceView] = {
            row[0]: InstanceView.from_row(row)
            for row in conn.execute(f"SELECT {VIEW_COLUMNS} FROM instances WHERE deleted = 0")
        }
        self._hosts: dict[int, str] = dict(conn.execute("SELECT host_id, name FROM hosts"))
        top = conn.execute("SELECT MAX(id) FROM intervals").fetchone()[0]
        self._next_interval: int = (top or 0) + 1
        self._curves = Curves(conn)
        self._spans = Spans(conn)

    def view(self, instance_id: int) -> InstanceView | None:
        """The current view of a live instance (None when unknown or deleted)."""
        with self._lock:
            return self._views.get(instance_id)

    def live_views(self) -> list[InstanceView]:
        with self._lock:
            return list(self._views.values())

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def reader(self) -> sqlite3.Connection:
        """A connection of the calling thread for queries (WAL: readers never block the writer)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = schema.connect(self.path, readonly=True)
            self._local.conn = conn
        return conn

    # -- the event stream ------------------------------------------------------
    def apply(self, events: Sequence[pb.Event]) -> int:
        """Commit the events after the last committed sequence; returns how many."""
        with self._lock:
            fresh = [ev for ev in events if ev.seq > self.seq]
            if not fresh:
                return 0
            batch = _Batch(self._next_interval)
            expected = self.seq + 1
            last_ns = self.last_event_ns
            for ev in fresh:
                stamp = ts_to_ns(ev.time) if ev.HasField("time") else last_ns
                # Sequence order is the order things happened: billing time never
                # runs backwards, even when the CM's clock steps back.
                t = max(stamp, last_ns)
                if ev.seq != expected:
                    gap = apb.LedgerGap(
                        after_seq=expected - 1, resume_seq=ev.seq - 1,
                        start_time=ns_to_ts(last_ns), end_time=ns_to_ts(t),
                        reason=f"events {expected}..{ev.seq - 1} were never delivered")
                    log.warning("ledger gap: %s", gap.reason)
                    batch.ledger_rows.append((KIND_GAP, None, t, 0, None, None, None,
                                              _serialize(gap)))
                self._apply_event(batch, ev, stamp, t)
                expected = ev.seq + 1
                last_ns = t
            self._commit(batch, fresh[-1].seq, last_ns)
            return len(fresh)

    def _apply_event(self, batch: _Batch, ev: pb.Event, stamp: int, t: int) -> None:
        subject = ev.WhichOneof("subject")
        instance_id = host_id = None
        owner = None
        if subject == "instance":
            inst = ev.instance
            instance_id, host_id, owner = inst.id, inst.status.host_id, inst.owner
            if ev.type == pb.EVENT_TYPE_INSTANCE_DELETED:
                self._delete(batch, inst, ev.seq, t)
            else:
                self._update(batch, inst, ev.seq, t)
        elif subject == "host":
            host_id = ev.host.id
            if ev.host.name:
                batch.hosts[ev.host.id] = ev.host.name
        batch.ledger_rows.append((KIND_EVENT, ev.seq, stamp, int(ev.type), instance_id, host_id,
                                  owner, _serialize(ev)))

    def _current(self, batch: _Batch, instance_id: int) -> InstanceView | None:
        view = batch.views.get(instance_id)
        if view is None:
            view = self._views.get(instance_id)
        return None if view is None or view.deleted else view

    def _host_name(self, batch: _Batch, inst: pb.Instance) -> str:
        status = inst.status
        if status.host_name or not status.host_id:
            return status.host_name
        return batch.hosts.get(status.host_id) or self._hosts.get(status.host_id, "")

    def _update(self, batch: _Batch, inst: pb.Instance, seq: int, t: int) -> None:
        old = self._current(batch, inst.id)
        state = inst.status.state
        new = InstanceView(
            instance_id=inst.id, owner=inst.owner, name=inst.name, state=state,
            phase=phase_of(state, old.phase if old else None), host_id=inst.status.host_id,
            host_name=self._host_name(batch, inst), cores=inst.spec.cores,
            memory_mib=inst.spec.memory_mib,
            interval_id=old.interval_id if old else None,
            interval_start_ns=old.interval_start_ns if old else 0,
            orphan_interval_id=old.orphan_interval_id if old else None, last_seq=seq)
        if old is not None and old.interval_id is not None \
                and (state == pb.INSTANCE_STATE_ORPHANED
                     or old.billing_key() != new.billing_key()):
            self._close_interval(batch, old, t)
            new = replace(new, interval_id=None, interval_start_ns=0)
            if state == pb.INSTANCE_STATE_ORPHANED:
                new = replace(new, orphan_interval_id=old.interval_id)
        if new.orphan_interval_id is not None and is_stable(state) \
                and state != pb.INSTANCE_STATE_ORPHANED:
            new = self._settle_orphan(batch, new)
        if new.phase != Phase.NONE and new.interval_id is None:
            new = self._open_interval(batch, new, t)
        batch.views[inst.id] = new

    def _settle_orphan(self, batch: _Batch, view: InstanceView) -> InstanceView:
        """The node manager reported an orphaned instance again: if it is in the
        phase, host and size it had when orphaned, it ran all along."""
        iid = view.orphan_interval_id
        assert iid is not None
        view = replace(view, orphan_interval_id=None)
        if view.phase == Phase.NONE or view.interval_id is not None:
            return view
        row = batch.new_intervals.get(iid)
        if row is None:
            row = list(self._conn.execute(
                "SELECT id, instance_id, owner, instance_name, host_id, host_name, phase, cores,"
                " memory_mib, start_ns, end_ns FROM intervals WHERE id = ?", (iid,)).fetchone())
        billing = (row[6], row[4], row[7], row[8], row[2])
        if billing != view.billing_key():
            return view
        ended = int(batch.end_of.get(iid, row[10]))
        if iid in batch.new_intervals:
            batch.new_intervals[iid][10] = schema.OPEN_END
        else:
            batch.ends.append((schema.OPEN_END, iid))
            batch.end_of[iid] = schema.OPEN_END
        # Take back the end booked when it was orphaned.
        for kind, key in ((USER, view.owner), (HOST, str(view.host_id))):
            batch.steps.append(((kind, key, int(view.phase)), ended, 1, view.cores,
                                view.memory_mib))
            self._spans.reopened(batch.spans, (kind, key, view.instance_id))
        return replace(view, interval_id=iid, interval_start_ns=int(row[9]))

    def _delete(self, batch: _Batch, inst: pb.Instance, seq: int, t: int) -> None:
        old = self._current(batch, inst.id)
        if old is not None and old.interval_id is not None:
            self._close_interval(batch, old, t)
        batch.views[inst.id] = InstanceView(
            instance_id=inst.id, owner=inst.owner, name=inst.name, state=inst.status.state,
            phase=Phase.NONE, host_id=inst.status.host_id, host_name=self._host_name(batch, inst),
            cores=inst.spec.cores, memory_mib=inst.spec.memory_mib, interval_id=None,
            interval_start_ns=0, orphan_interval_id=None, last_seq=seq, deleted=True)

    def _open_interval(self, batch: _Batch, view: InstanceView, t: int) -> InstanceView:
        iid = batch.next_interval
        batch.next_interval += 1
        batch.new_intervals[iid] = [iid, view.instance_id, view.owner, view.name, view.host_id,
                                    view.host_name, int(view.phase), view.cores,
                                    view.memory_mib, t, schema.OPEN_END]
        self._billing_changed(batch, view.instance_id, view.owner, view.host_id,
                              int(view.phase), view.cores, view.memory_mib, t, +1)
        return replace(view, interval_id=iid, interval_start_ns=t)

    def _close_interval(self, batch: _Batch, view: InstanceView, t: int) -> None:
        assert view.interval_id is not None
        end = max(t, view.interval_start_ns)  # a clock step back never bills negative time
        pending = batch.new_intervals.get(view.interval_id)
        if pending is not None:
            pending[10] = end
        else:
            batch.ends.append((end, view.interval_id))
            batch.end_of[view.interval_id] = end
        self._billing_changed(batch, view.instance_id, view.owner, view.host_id,
                              int(view.phase), view.cores, view.memory_mib, end, -1)

    def _billing_changed(self, batch: _Batch, instance_id: int, owner: str, host_id: int,
                         phase: int, cores: int, memory_mib: int, t: int, sign: int) -> None:
        """An interval opened (+1) or closed (-1) at `t`: step the user's and the
        host's usage curves and extend or end the instance's billed spans."""
        for kind, key in ((USER, owner), (HOST, str(host_id))):
            batch.steps.append(((kind, key, phase), t, sign, sign * cores, sign * memory_mib))
            span = (kind, key, instance_id)
            if sign > 0:
                self._spans.opened(batch.spans, span, t)
            else:
                self._spans.closed(batch.spans, span, t)

    def _commit(self, batch: _Batch, seq: int, last_ns: int) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO ledger (kind, seq, time_ns, type, instance_id, host_id, owner, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch.ledger_rows)
            conn.executemany(
                "INSERT INTO intervals (id, instance_id, owner, instance_name, host_id,"
                " host_name, phase, cores, memory_mib, start_ns, end_ns)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", batch.new_intervals.values())
            conn.executemany("UPDATE intervals SET end_ns = ? WHERE id = ?", batch.ends)
            conn.executemany(
                f"INSERT OR REPLACE INTO instances ({VIEW_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [v.as_row() for v in batch.views.values()])
            conn.executemany("INSERT OR REPLACE INTO hosts (host_id, name) VALUES (?, ?)",
                             batch.hosts.items())
            conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             [("last_seq", seq), ("last_event_ns", last_ns)])
            curves = self._curves.write(conn, batch.steps)
            self._spans.write(conn, batch.spans)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        for iid, view in batch.views.items():
            if view.deleted:
                self._views.pop(iid, None)
            else:
                self._views[iid] = view
        self._hosts.update(batch.hosts)
        self._next_interval = batch.next_interval
        self._curves.adopt(*curves)
        self._spans.adopt(batch.spans, {i for i, v in batch.views.items() if v.deleted})
        self.seq = seq
        self.last_event_ns = last_ns

    # -- relist after OUT_OF_RANGE ----------------------------------------------
    def relist(self, instances: Iterable[pb.Instance], resume_seq: int, now: int,
               reason: str) -> apb.LedgerGap:
        """Record a gap and take the listed instances as the truth as of `now`.

        What happened between the last event and the listing is unknown; the
        gap record says so.  Instances keep their billed interval when the
        listing shows the same phase, host and size; otherwise the change is
        booked at the listing time.
        """
        with self._lock:
            now = max(now, self.last_event_ns)
            gap = apb.LedgerGap(after_seq=self.seq, resume_seq=resume_seq,
                                start_time=ns_to_ts(self.last_event_ns), end_time=ns_to_ts(now),
                                reason=reason)
            batch = _Batch(self._next_interval)
            batch.ledger_rows.append((KIND_GAP, None, now, 0, None, None, None, _serialize(gap)))
            listed = {inst.id: inst for inst in instances}
            for iid, old in list(self._views.items()):
                if iid not in listed:
                    self._delete(batch, old.to_pb(), resume_seq, now)
            for inst in listed.values():
                if inst.id not in self._views:
                    self._spans.revived.add(inst.id)  # perhaps known before, under a reset
                self._update(batch, inst, resume_seq, now)
            log.warning("ledger gap after seq %d, resuming at %d: %s",
                        self.seq, resume_seq, reason)
            self._commit(batch, resume_seq, now)
            return gap

    # -- reconcile -------------------------------------------------------------------
    def reconcile(self, instances: Iterable[pb.Instance], list_seq: int,
                  now: int) -> list[apb.LedgerDrift]:
        """Compare the ledger with a listing consistent with event `list_seq`.

        The ledger must have committed at least up to the newest sequence of
        the listing's pages.  Instances whose last event is newer than
        `list_seq` changed after the listing and are not compared.  Each
        difference is recorded and corrected as of `now`.
        """
        with self._lock:
            now = max(now, self.last_event_ns)
            listed = {inst.id: inst for inst in instances}
            unknown = [iid for iid in listed if iid not in self._views]
            gone: dict[int, InstanceView] = {}
            for chunk in range(0, len(unknown), 500):
                ids = unknown[chunk:chunk + 500]
                marks = ",".join("?" * len(ids))
                for row in self._conn.execute(
                        f"SELECT {VIEW_COLUMNS} FROM instances WHERE instance_id IN ({marks})",
                        ids):
                    gone[row[0]] = InstanceView.from_row(row)
            drifts: list[tuple[InstanceView | None, pb.Instance | None, str]] = []
            for iid, inst in listed.items():
                view = self._views.get(iid) or gone.get(iid)
                if view is None:
                    drifts.append((None, inst, "the ledger never saw this instance"))
                elif view.last_seq > list_seq:
                    continue
                elif view.deleted:
                    drifts.append((view, inst, "the ledger has this instance deleted"))
                elif view.differs_from(inst):
                    drifts.append((view, inst, "the ledger's view differs"))
            for iid, view in self._views.items():
                if iid not in listed and view.last_seq <= list_seq:
                    drifts.append((view, None, "the cluster manager no longer has this instance"))
            if not drifts:
                return []
            batch = _Batch(self._next_interval)
            records: list[apb.LedgerDrift] = []
            for view, seen, reason in drifts:
                subject = seen if seen is not None else view.to_pb()  # type: ignore[union-attr]
                record = apb.LedgerDrift(instance_id=subject.id, owner=subject.owner,
                                         seq=list_seq, time=ns_to_ts(now), reason=reason)
                if view is not None:
                    record.ledger.CopyFrom(view.to_pb())
                if seen is not None:
                    record.cluster.CopyFrom(seen)
                records.append(record)
                log.warning("drift on instance %d: %s", subject.id, reason)
                batch.ledger_rows.append((KIND_DRIFT, None, now, 0, subject.id,
                                          subject.status.host_id, subject.owner,
                                          _serialize(record)))
                if seen is None:
                    self._delete(batch, subject, self.seq, now)
                else:
                    if view is not None and view.deleted:
                        batch.views[seen.id] = replace(view, deleted=False)
                        self._spans.revived.add(seen.id)
                    self._update(batch, seen, self.seq, now)
            self._commit(batch, self.seq, now)
            return records
