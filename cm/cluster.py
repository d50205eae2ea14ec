"""The cluster manager's truth: the whole cluster in memory, written through
to the store with its events: the changes made in one turn of the lock go in
one transaction (cm/commits.py), and no reader under the lock sees a change
before it is stored.

Every object held in the dictionaries here is treated as immutable: a
change copies it, edits the copy and puts it through a `Txn`, so readers and
events never see half-made objects.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message

from tashi.cm import lifecycle
from tashi.cm.beats import Beats
from tashi.cm.cadence import cadence
from tashi.cm.commits import Combiner, Group, Job
from tashi.cm.config import CMConfig
from tashi.cm.eventlog import EventLog
from tashi.cm.store import Batch, Store, StoreError
from tashi.cm.txn import Txn, Usage, copy_of, move
from tashi.cm.validation import check_request_id
from tashi.runtime.auth import SERVICE_PREFIX, is_system
from tashi.runtime.errors import denied, invalid, not_found, unauthenticated, unavailable
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Message)
E = pb  # event types live in resources_pb2

# What the stored resources look like: 2 is Instance with spec and status.  A
# store without it was written before that split and cannot be read as such.
STORE_FORMAT = 2

# The in-memory table of each stored kind, by attribute (what an undo puts back).
TABLES = {"instance": "instances", "host": "hosts", "network": "networks", "user": "users",
          "token": "tokens", "image": "image_records"}

# A takeover makes again the node manager calls these states were waiting on.
AGAIN_ON_TAKEOVER = {
    pb.INSTANCE_STATE_ACTIVATING: "start", pb.INSTANCE_STATE_PAUSING: "pause",
    pb.INSTANCE_STATE_UNPAUSING: "unpause", pb.INSTANCE_STATE_SHUTTING_DOWN: "shutdown",
    pb.INSTANCE_STATE_DESTROYING: "destroy",
}
# States a takeover leaves as they are (the host's reports keep them true).
STEADY = frozenset({pb.INSTANCE_STATE_RUNNING, pb.INSTANCE_STATE_PAUSED})


def _lookup(kind: str, ref: cmpb.InstanceRef | cmpb.HostRef, by_id: dict[int, R],
            ids: dict[str, int]) -> R:
    """The resource a reference names by id or by name, or NOT_FOUND."""
    which = ref.WhichOneof("ref")
    if which == "id":
        found = by_id.get(ref.id)
        if found is None:
            raise not_found(f"no {kind} with id {ref.id}")
        return found
    if which == "name":
        oid = ids.get(ref.name)
        if oid is None:
            raise not_found(f"no {kind} named {ref.name!r}")
        return by_id[oid]
    raise invalid(f"name the {kind} by id or name")


class Cluster:
    def __init__(self, config: CMConfig, store: Store) -> None:
        self.cfg = config
        self.store = store
        self.images = Path(config.images) if config.images else None
        self.lock = threading.RLock()
        loaded = store.load(recent=min(config.event_retention, 100_000))
        found = loaded.meta.get("store_format", 0)
        if found != STORE_FORMAT and (any(loaded.resources.values()) or loaded.last_seq):
            raise StoreError(
                f"the store {config.db} holds format {found}, this cluster manager reads format "
                f"{STORE_FORMAT} (instances with spec and status); start from a new --db")
        # Bumped whenever an instance id comes or goes, never reset (listing.py).
        self.instance_keys = 0
        self._load_resources(loaded.resources)
        self.meta = dict(loaded.meta)
        for kind, table in (("host", self.hosts), ("instance", self.instances),
                            ("user", self.users), ("token", self.tokens),
                            ("image", self.image_records)):
            key = f"next_{kind}_id"
            self.meta[key] = max(self.meta.get(key, 1), max(table, default=0) + 1)
        self.events = EventLog(store, loaded.first_seq, loaded.last_seq, loaded.recent_events,
                               config.event_retention)
        # Request ids answered so far, so a new id costs no store lookup.
        self.request_ids = store.request_ids()
        self.heartbeats: dict[int, float] = {}
        # Kept to the fleet's size by the liveness monitor's rounds (cm/cadence.py).
        self.cadence = cadence(config, len(self.hosts))
        self.cadence_shrunk_at: float | None = None  # cm/cadence.py settle
        # The process that hears heartbeats, when there is one (cm/beats.py).
        self.beats: Beats | None = None
        self.applied_reports: dict[int, int] = {}
        # Per host: (the NM's incarnation, the highest report_seq this CM learned
        # from it: a registration list, a start's answer); see nodes.register.
        self.nm_seqs: dict[int, tuple[int, int]] = {}
        # Per instance: (host id, report_seq) of the last answer that host's node
        # manager gave about it; its reports numbered below say less (nodes.report).
        self.answer_seqs: dict[int, tuple[int, int]] = {}
        # host id -> sha256 of the certificate its node manager registered with.
        self.host_certs: dict[int, str] = {}
        self.dispatch: Callable[[str, int], None] = lambda action, iid: None
        # Ends a VM a host still runs for an instance since deleted (host id, instance id).
        self.end_stray: Callable[[int, int], None] = lambda host_id, iid: None
        # Told whether the last write reached the store (health follows it).
        self.writable: Callable[[bool], None] = lambda ok: None
        # Told when the store says another CM leads now (cm/pgstore.py LeaseLost).
        self.deposed: Callable[[str], None] = lambda why: None
        self._commits = 0
        # Changes waiting for the lock are made and stored in turns (cm/commits.py).
        self.combiner = Combiner(self.lock, self._run_group)
        self._group: Group | None = None  # the turn being made, under the lock

    def _load_resources(self, resources: dict[str, list[bytes]]) -> None:
        """(Re)build every in-memory table from the store's resources."""
        self.hosts: dict[int, pb.Host] = {}
        self.instances: dict[int, pb.Instance] = {}
        self.instance_keys += 1  # a new table: the listing sorts its ids again
        self.networks: dict[int, pb.Network] = {}
        self.users: dict[int, pb.User] = {}
        self.tokens: dict[int, pb.StoredToken] = {}
        # The image catalogue (cm/images.py), by id and by store-relative name.
        self.image_records: dict[int, pb.Image] = {}
        self.image_ids: dict[str, int] = {}
        self.host_ids: dict[str, int] = {}
        self.instance_ids: dict[str, int] = {}
        self.user_ids: dict[str, int] = {}
        self.usage: dict[int, Usage] = {}
        # host id -> the instances charged to it (those `usage` counts), so a host's
        # registration or expiry looks at its own instances, not at every one.
        self.charged: dict[int, set[int]] = {}
        # owner -> what their instances ask for, in every state (for quotas).
        self.owned: dict[str, Usage] = {}
        # (network id, address) -> instance holding it, kept with the instances.
        self.addresses: dict[tuple[int, str], int] = {}
        # image -> the instances placed on a host that use it in place (persistent)
        # and as a base (overlay), kept with the instances (placement's disk check).
        self.in_place: dict[str, dict[int, None]] = {}
        self.as_base: dict[str, dict[int, None]] = {}
        for kind, cls in (("host", pb.Host), ("instance", pb.Instance),
                          ("network", pb.Network), ("user", pb.User),
                          ("token", pb.StoredToken), ("image", pb.Image)):
            for body in resources.get(kind, []):
                self._apply(kind, cls.FromString(body))

    def _rebuild(self) -> None:
        """Memory from the store again, after a change could not be applied in full."""
        loaded = self.store.load(recent=0)
        self._load_resources(loaded.resources)
        self.meta = dict(loaded.meta)

    # -- ids and lookups -------------------------------------------------------
    def next_id(self, txn: Txn, kind: str) -> int:
        """Ids are never reused, even after deletions (the counter is stored)."""
        key = f"next_{kind}_id"
        current = txn.meta.get(key) or self.meta.get(key) or 1
        txn.meta[key] = current + 1
        return current

    def issued(self, txn: Txn, kind: str, ident: int) -> bool:
        """Whether `ident` was ever given out (ids below the counter were; an
        unknown one of those belonged to something since deleted)."""
        key = f"next_{kind}_id"
        return ident < (txn.meta.get(key) or self.meta.get(key) or 1)

    def user(self, name: str) -> pb.User:
        if is_system(name):  # a node or service, verified by its certificate
            return pb.User(name=name)
        uid = self.user_ids.get(name)
        if uid is None:
            if not name:
                raise unauthenticated("no user given: set --user or TASHI_USER")
            raise unauthenticated(f"unknown user {name!r}: an admin adds it with `tashi addUser`")
        return self.users[uid]

    def is_admin(self, name: str) -> bool:
        """Admins are the users the config names, and the services (the scheduler,
        accounting), whose certificates the policy table already limits to their RPCs."""
        return name in self.cfg.admins or name.startswith(SERVICE_PREFIX)

    def require_user(self, name: str) -> pb.User:
        return self.user(name)

    def require_admin(self, name: str, what: str) -> None:
        self.user(name)
        if not self.is_admin(name):
            raise denied(f"only admins may {what}; {name!r} is not an admin")

    def find_instance(self, ref: cmpb.InstanceRef) -> pb.Instance:
        return _lookup("instance", ref, self.instances, self.instance_ids)

    def find_host(self, ref: cmpb.HostRef) -> pb.Host:
        return _lookup("host", ref, self.hosts, self.host_ids)

    def check_owner(self, actor: str, inst: pb.Instance) -> None:
        self.user(actor)
        if inst.owner != actor and not self.is_admin(actor):
            raise denied(f"instance {inst.name!r} belongs to {inst.owner!r}, not to {actor!r}")

    def decayed(self, host_id: int) -> bool:
        """Tashi's decayed: the host is up but has not been heard from lately, so what
        the CM shows of it (and of its instances) may be stale."""
        host = self.hosts.get(host_id)
        if host is None or not host.up:
            return False
        beat = self.heartbeats.get(host_id)
        return beat is None or time.monotonic() - beat > self.cadence.decay

    def host_view(self, host: pb.Host) -> pb.Host:
        view = copy_of(host)
        view.decayed = self.decayed(host.id)
        use = self.usage.get(host.id)
        if use:
            view.used_cores = use.cores
            view.used_memory_mib = use.memory_mib
            view.instance_count = use.count
        beat = self.heartbeats.get(host.id)
        if beat is not None:
            view.last_heartbeat_time.FromSeconds(int(time.time() - (time.monotonic() - beat)))
        return view

    def learned(self, host_id: int, report_seq: int, iid: int = 0) -> None:
        """Under the lock: this CM learned what host `host_id`'s node manager
        numbered `report_seq` (a report, the answer of a start; of a pause, a
        shutdown... of instance `iid`); a registration list that node manager
        took before it is out of date (nodes.stale_list), and so is its report of
        `iid` numbered before."""
        if report_seq:
            incarnation, top = self.nm_seqs.get(host_id, (0, 0))
            self.nm_seqs[host_id] = (incarnation, max(top, report_seq))
            known = self.answer_seqs.get(iid)
            if iid and (known is None or known[0] != host_id or known[1] < report_seq):
                self.answer_seqs[iid] = (host_id, report_seq)

    def free(self, host: pb.Host) -> tuple[int, int]:
        use = self.usage.get(host.id, Usage())
        return host.cores - use.cores, host.memory_mib - use.memory_mib

    # -- writing -----------------------------------------------------------------
    def _index_disks(self, inst: pb.Instance, add: bool) -> None:
        if not inst.status.host_id:
            return
        for d in inst.spec.disks:
            users = (self.in_place if d.persistent else self.as_base).setdefault(d.uri, {})
            if add:
                users[inst.id] = None
            else:
                users.pop(inst.id, None)
                if not users:
                    del (self.in_place if d.persistent else self.as_base)[d.uri]

    def _apply(self, kind: str, obj: Message | None, oid: int = 0) -> None:
        """Install one committed change in memory (obj None deletes `oid`)."""
        if kind == "instance":
            old = self.instances.get(oid or obj.id)  # type: ignore[union-attr]
            if old is not None:
                for h in old.status.charged_host_ids:
                    use = self.usage.setdefault(h, Usage())
                    use.cores -= old.spec.cores
                    use.memory_mib -= old.spec.memory_mib
                    use.count -= 1
                    self.charged.get(h, set()).discard(old.id)
                if self.instance_ids.get(old.name) == old.id:
                    del self.instance_ids[old.name]
                mine = self.owned.setdefault(old.owner, Usage())
                mine.count -= 1
                mine.cores -= old.spec.cores
                mine.memory_mib -= old.spec.memory_mib
                for nic in old.status.nics:
                    if nic.ip and self.addresses.get((nic.network_id, nic.ip)) == old.id:
                        del self.addresses[(nic.network_id, nic.ip)]
                self._index_disks(old, add=False)
            if obj is None:
                if self.instances.pop(oid, None) is not None:
                    self.instance_keys += 1
                self.answer_seqs.pop(oid, None)
                return
            assert isinstance(obj, pb.Instance)
            if old is None:
                self.instance_keys += 1
            self.instances[obj.id] = obj
            self.instance_ids[obj.name] = obj.id
            mine = self.owned.setdefault(obj.owner, Usage())
            mine.count += 1
            mine.cores += obj.spec.cores
            mine.memory_mib += obj.spec.memory_mib
            for nic in obj.status.nics:
                if nic.ip:
                    self.addresses[(nic.network_id, nic.ip)] = obj.id
            self._index_disks(obj, add=True)
            for h in obj.status.charged_host_ids:
                use = self.usage.setdefault(h, Usage())
                use.cores += obj.spec.cores
                use.memory_mib += obj.spec.memory_mib
                use.count += 1
                self.charged.setdefault(h, set()).add(obj.id)
        elif kind == "host":
            old_h = self.hosts.get(oid or obj.id)  # type: ignore[union-attr]
            if old_h is not None:
                self.host_ids.pop(old_h.name, None)
            if obj is None:
                self.hosts.pop(oid, None)
                self.heartbeats.pop(oid, None)
                self.applied_reports.pop(oid, None)
                self.nm_seqs.pop(oid, None)
                return
            assert isinstance(obj, pb.Host)
            self.hosts[obj.id] = obj
            self.host_ids[obj.name] = obj.id
        elif kind == "network":
            if obj is None:
                self.networks.pop(oid, None)
                return
            assert isinstance(obj, pb.Network)
            self.networks[obj.id] = obj
        elif kind == "token":
            if obj is None:  # only when a turn the store refused is undone
                self.tokens.pop(oid, None)
                return
            assert isinstance(obj, pb.StoredToken)
            self.tokens[obj.id] = obj
        elif kind == "image":
            if obj is None:
                gone = self.image_records.pop(oid, None)
                if gone is not None:
                    self.image_ids.pop(gone.name, None)
                return
            assert isinstance(obj, pb.Image)
            self.image_records[obj.id] = obj
            self.image_ids[obj.name] = obj.id
        elif kind == "user":
            if obj is None:
                old_u = self.users.pop(oid, None)
                if old_u is not None:
                    self.user_ids.pop(old_u.name, None)
                return
            assert isinstance(obj, pb.User)
            self.users[obj.id] = obj
            self.user_ids[obj.name] = obj.id

    def _table(self, kind: str) -> dict[int, Any]:
        """Where each kind's objects live in memory (what a change replaced, for undo)."""
        return getattr(self, TABLES[kind])  # type: ignore[no-any-return]

    def _run_group(self, jobs: Iterable[Job]) -> None:
        """Under the lock (cm/commits.py): run `jobs` one after another, each seeing
        the changes of those before it, then store what they staged at once."""
        self._group = Group(self.events.last_seq)
        ran: list[Job] = []
        try:
            for job in jobs:
                ran.append(job)
                self._group.jobs.append(job)
                try:
                    job.result = job.fn()
                except Exception as exc:
                    job.error = exc
            self._flush()
        finally:
            self._group = None
            for job in ran:
                job.finished = True

    def _stage(self, txn: Txn, request: tuple[str, str, Message] | None = None) -> None:
        """Add `txn` (and the answer to `request`) to this turn's write, and apply
        it in memory, where the rest of the turn sees it (it is undone there if
        the store refuses the turn)."""
        group = self._group
        assert group is not None
        if not txn.changes and not txn.meta and request is None:
            return
        now = time.time_ns()
        for event in txn.events:
            group.seq += 1
            event.seq = group.seq
            event.time.FromNanoseconds(now)
            group.events.append(event)
        for kind, oid, obj in txn.changes:
            group.changes[kind, oid] = None if obj is None else obj.SerializeToString()
        for key in txn.meta:
            group.meta_before.setdefault(key, self.meta.get(key))
        group.meta.update(txn.meta)
        if request is not None:
            rid, method, resp = request
            answer = (rid, method, resp.SerializeToString())
            group.requests.append(answer)
            group.answers[rid] = answer[1:]
            self.request_ids.add(rid)
        group.txns += 1
        try:
            for kind, oid, obj in txn.changes:
                group.undo.append((kind, oid, self._table(kind).get(oid)))
                self._apply(kind, obj, oid)
            self.meta.update(txn.meta)
        except Exception:
            # Memory must never drift from the store: store the turn, take its word.
            log.exception("applying a change failed; rebuilding memory from the store")
            self._flush()
            self._rebuild()
            raise

    def _flush(self) -> None:
        """Write this turn's changes in one transaction; if the store refuses them,
        take them back out of memory and fail every job of the turn."""
        group = self._group
        assert group is not None
        self._group = Group(group.seq)
        if group.empty():
            return
        batch = Batch(puts=[(k, i, b) for (k, i), b in group.changes.items() if b is not None],
                      deletes=[(k, i) for (k, i), b in group.changes.items() if b is None],
                      events=[(e.seq, e.SerializeToString()) for e in group.events],
                      requests=group.requests, meta=group.meta)
        try:
            self.store.commit(batch)
        except Exception as exc:
            self.writable(False)
            if getattr(exc, "deposed", False):
                self.deposed(str(exc))
                error = unavailable("this cluster manager lost its lease to another; "
                                    "nothing was changed")
            else:
                log.exception("the store refused a change; nothing of it was applied")
                error = unavailable(f"the cluster manager cannot write its store ({exc}); "
                                    "nothing was changed")
            for job in group.jobs:
                job.result, job.error = None, job.error or error
            self._group = Group(self.events.last_seq)
            self._undo(group)
            return
        self.writable(True)
        self.events.publish(group.events)  # stored: watchers may see them now
        before, self._commits = self._commits, self._commits + group.txns
        if before // 1000 != self._commits // 1000:
            self._prune()

    def _undo(self, group: Group) -> None:
        for kind, oid, before in reversed(group.undo):
            self._apply(kind, before, oid)
        for key, value in group.meta_before.items():
            if value is None:
                self.meta.pop(key, None)
            else:
                self.meta[key] = value
        self.request_ids.difference_update(rid for rid, _, _ in group.requests)

    def _prune(self) -> None:
        """Drop events beyond the retention window and request answers past theirs."""
        keep_from = max(self.events.first_seq, self.events.last_seq - self.cfg.event_retention + 1)
        self.store.prune(keep_from, time.time() - self.cfg.request_retention_seconds)
        self.request_ids = self.store.request_ids()
        self.events.trimmed_to(keep_from)

    def _turn(self, fn: Callable[[], Any], call: bool = False, what: str = "") -> Any:
        """Run `fn` (which stages its change) in a turn of the lock: its own turn
        or, called under the lock, now (within the turn this thread runs);
        `call`: a caller's change, not the CM's own (cm/commits.py)."""
        if self.lock._is_owned():  # type: ignore[attr-defined]
            if self._group is not None:
                return fn()
            job = Job(fn)
            self._run_group([job])
            return job.outcome()
        return self.combiner.run(fn, call, what)

    def mutate(self, actor: str, request_id: str, method: str, resp_cls: type[R],
               body: Callable[[Txn], R]) -> R:
        """Run `body` under the lock and commit what it staged, once per request_id."""
        # Request ids are the caller's own: one user's id never answers another's call.
        check_request_id(request_id)
        rid = f"{actor}/{request_id}" if request_id else ""

        def job() -> tuple[R, Txn | None]:
            if rid and rid in self.request_ids:
                assert self._group is not None
                prior = self._group.answers.get(rid) or self.store.request(rid)
                if prior is not None:
                    if prior[0] != method:
                        raise invalid(f"request_id {request_id!r} was already used for "
                                      f"{prior[0]}")
                    return resp_cls.FromString(prior[1]), None
            txn = Txn(actor, self.instances)
            resp = body(txn)
            self._stage(txn, (rid, method, resp) if rid else None)
            return resp, txn

        resp, txn = self._turn(job, call=True, what=method)
        for action in txn.after if txn is not None else ():
            action()
        return resp

    def write(self, actor: str, body: Callable[[Txn], None]) -> None:
        """An internal change (no request id), e.g. from the liveness monitor."""
        def job() -> Txn:
            txn = Txn(actor, self.instances)
            body(txn)
            self._stage(txn)
            return txn

        for action in self._turn(job, what=body.__qualname__.replace(".<locals>", "")).after:
            action()

    # -- start-up -----------------------------------------------------------------
    def recover(self, takeover: bool = False) -> None:
        """After a (re)start: hosts are down until they register, instances on
        hosts are Orphaned until their NM reports them, starts in flight go back
        to Pending, and the configured admins exist.

        `takeover` (a standby taking over a shared store's lease): the node
        managers are alive and heartbeating, only their CM changed, so nothing
        flaps: up hosts stay up (given the usual expiry to be heard from),
        running instances stay as they are, and the calls the old leader had in
        flight are made again (node managers answer a repeated call as the
        first); only a suspend or a migration, whose outcome only the host can
        tell, waits Orphaned for its report."""

        def body(txn: Txn) -> None:
            if self.meta.get("store_format") != STORE_FORMAT:
                txn.meta["store_format"] = STORE_FORMAT
            for name in self.cfg.admins:
                if name not in self.user_ids:
                    txn.put(pb.User(id=self.next_id(txn, "user"), name=name),
                            E.EVENT_TYPE_USER_CREATED, "admin from config")
            for host in list(self.hosts.values()):
                if host.up and takeover:
                    self.heartbeats[host.id] = time.monotonic()
                elif host.up:
                    new = copy_of(host)
                    new.up = False
                    txn.put(new, E.EVENT_TYPE_HOST_UPDATED,
                            "cluster manager restarted: waiting for the node manager to register")
            for inst in list(self.instances.values()):
                status = inst.status
                again = AGAIN_ON_TAKEOVER.get(status.state) if takeover else None
                if again is not None:
                    iid = inst.id
                    txn.after.append(lambda iid=iid, a=again: self.dispatch(a, iid))  # type: ignore[misc]
                elif status.state == pb.INSTANCE_STATE_ACTIVATING:
                    why = "cluster manager restarted before the start completed"
                    move(txn, inst, pb.INSTANCE_STATE_PENDING, why, why)
                elif status.host_id and status.state in lifecycle.ORPHANABLE and (
                        not takeover or status.state not in STEADY):
                    why = "cluster manager restarted: waiting for the host to report"
                    move(txn, inst, pb.INSTANCE_STATE_ORPHANED, why, why)

        self.write("tashi-cm", body)

    # -- reading ------------------------------------------------------------------
    @staticmethod
    def page_bounds(page_size: int, token: str) -> tuple[int, int]:
        """(how many, after which id) a List request asks for."""
        size = page_size or 1000
        if size < 0 or size > 5000:
            raise invalid("page_size must be between 1 and 5000")
        after = 0
        if token:
            try:
                after = int(token)
            except ValueError:
                raise invalid(f"page_token {token!r} is not one this server gave") from None
        return size, after

    def page(self, items: Iterable[int], page_size: int, token: str) -> tuple[list[int], str]:
        size, after = self.page_bounds(page_size, token)
        ids = heapq.nsmallest(size + 1, (i for i in items if i > after))
        chosen = ids[:size]
        return chosen, (str(chosen[-1]) if len(ids) > size else "")
