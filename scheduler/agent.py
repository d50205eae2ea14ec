"""The placement agent: keeps its own view from the CM's events and proposes placements.

One thread owns the view (this one); the shared `Informer` lists and
watches on another and queues listings and event batches.  After each
listing, and each time events arrive, it places what can be placed:

- Pending VMs in id order, then Held VMs, but Held ones only when room may
  have appeared since they were last tried (`ClusterView.capacity_epoch`
  moved: a host came up or grew, an instance left a host ...).  So a Held
  VM is placed by itself as soon as capacity appears, with no polling.
- Decisions are made against the view with earlier decisions of the same
  pass assumed, and sent in batches to `ActivateInstances`.  Accepted ones
  are applied at once (events older than the answer are then skipped for
  that instance); refused ones wait until the view has caught up with the
  answer's sequence, then are decided again with that fresh state.  After
  `max_refusals` refusals in a row a Pending VM is held with the CM's reason.
- VMs that fit nowhere go to `HoldInstances` with the placer's reason.
- A VM whose start failed on a host (Activating there, then Held) is kept
  off that host for a while (doubling per failure) and placed elsewhere.

`OUT_OF_RANGE` on the stream, `resync_seconds` passing, or an error
talking to the CM brings a new listing (the informer relists; a broken
stream is resumed from its seq); nothing is kept across listings but the
start-failure bans, so a restarted scheduler misses nothing, and the CM's
state check makes sure nothing is placed twice.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tashi.runtime.client import ClusterClient, TashiError
from tashi.runtime.informer import Informer, Listing
from tashi.scheduler.cluster import ClusterView
from tashi.scheduler.config import SchedulerConfig
from tashi.scheduler.convert import host_view, vm_spec
from tashi.scheduler.hooks import Hook, HookChain, NetworkInfo
from tashi.scheduler.ipam import IpAllocator
from tashi.scheduler.model import Chosen, Policy, VmSpec, VmState
from tashi.scheduler.placer import Placer
from tashi.v1 import placement_pb2 as pl
from tashi.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

_DELETED = {pb.EVENT_TYPE_HOST_DELETED, pb.EVENT_TYPE_INSTANCE_DELETED,
            pb.EVENT_TYPE_NETWORK_DELETED}
MAX_BAN_SECONDS = 600.0


_NEVER = 2**62


@dataclass(frozen=True)
class Item:
    """What the informer handed over: a listing, or a batch of events."""

    listing: Listing | None = None
    events: list[pb.Event] = field(default_factory=list)


class _Enqueue:
    """The agent's informer handler: hand everything to the agent's own thread, in order."""

    def __init__(self, out: queue.Queue[Item | None]) -> None:
        self._out = out

    def on_list(self, listing: Listing, reason: str) -> None:
        if reason:
            log.info("relisting: %s", reason)
        self._out.put(Item(listing=listing))

    def on_events(self, events: list[pb.Event]) -> None:
        self._out.put(Item(events=events))


@dataclass
class Stats:
    sessions: int = 0
    passes: int = 0
    decisions: int = 0
    proposed: int = 0
    accepted: int = 0
    refused: int = 0
    held: int = 0
    events: int = 0


class Agent:
    def __init__(self, client: ClusterClient, config: SchedulerConfig | None = None,
                 hooks: Iterable[Hook] | None = None,
                 on_connected: Callable[[], None] | None = None) -> None:
        self.client = client
        self.config = config or SchedulerConfig()
        self.policy = Policy(self.config.policy)
        if hooks is None:
            hooks = [IpAllocator()] if self.config.ip_allocator else []
        self.hooks = HookChain(list(hooks))
        self.on_connected = on_connected
        self.stats = Stats()
        self.view = ClusterView()
        self.placer = Placer(self.view, self.policy)
        self.seq = 0
        self._queue: queue.Queue[Item | None] = queue.Queue()
        self._stopping = threading.Event()
        self.informer: Informer | None = None
        self._ready_seq = _NEVER  # nothing is decided before the first listing is whole
        self._passing = False
        self._relisted: Listing | None = None
        # vm id -> sequence the view must reach before the VM is decided again.
        self._retry_after: dict[int, int] = {}
        self._refusals: Counter[int] = Counter()
        # vm id -> sequence of the ActivateInstances answer already applied.
        self._confirmed: dict[int, int] = {}
        # Pending VMs we asked the CM to hold: not decided again until they change.
        self._holding: set[int] = set()
        self._start_failures: Counter[int] = Counter()
        self._held_epoch = -1
        # Events were applied since the last pass began.
        self._dirty = False

    # -- lifecycle ------------------------------------------------------------------
    def run(self) -> None:
        """Follow the CM through an informer and place until `stop`; a CM that is
        away is waited for (by the informer, with backoff)."""
        self.informer = Informer(self.client, _Enqueue(self._queue),
                                 resync_seconds=self.config.resync_seconds, name="scheduler")
        self.informer.start()
        delay = 0.5
        try:
            while not self._stopping.is_set():
                try:
                    self._step()
                    delay = 0.5
                except TashiError as exc:
                    log.warning("cluster manager at %s: %s; relisting in %.1fs",
                                self.client.address, exc, delay)
                    self._ready_seq = _NEVER  # decide nothing until the new listing
                    self._stopping.wait(delay)
                    delay = min(delay * 2, 10.0)
                    self.informer.resync(f"after an error: {exc}")
        finally:
            self.informer.stop()

    def stop(self) -> None:
        self._stopping.set()
        self._queue.put(None)

    # -- one step ---------------------------------------------------------------------
    def _step(self) -> None:
        # The listing itself may hold Pending VMs: decide before waiting.
        self.view.expire_avoids()
        if self.seq >= self._ready_seq:
            self._dirty = False
            try:
                self._passing = True
                self._schedule()
            finally:
                self._passing = False
        if self._relisted is not None:
            listing, self._relisted = self._relisted, None
            self._load(listing)
        elif self._dirty:
            self._drain()  # events came in during the pass: look again at once
        else:
            self._wait()

    def _wait(self) -> None:
        """Block until something arrives (or a ban ends), then apply all that queued."""
        ban_end = self.view.next_avoid_expiry()
        timeout = None if ban_end is None else max(0.0, ban_end - time.monotonic())
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return
        self._handle(item)
        self._drain()

    def _drain(self) -> None:
        """Apply what queued, up to a new listing (kept for after the pass)."""
        while self._relisted is None:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            self._handle(item)

    def _handle(self, item: Item | None) -> None:
        if item is None:
            return
        if item.listing is not None:
            if self._passing:
                self._relisted = item.listing
            else:
                self._load(item.listing)
            return
        for event in item.events:
            self._apply(event)

    def _load(self, listing: Listing) -> None:
        old = self.view
        self.view = ClusterView()
        self.view.copy_avoids(old)
        self.placer = Placer(self.view, self.policy)
        self.hooks.reset()
        for net in listing.networks:
            self.hooks.network(NetworkInfo(net.id, net.name, net.cidr))
        for host in listing.hosts:
            self.view.upsert_host(host_view(host))
        for inst in listing.instances:
            vm = vm_spec(inst)
            self.view.upsert_instance(vm)
            self.hooks.observe(vm)
        self.seq = listing.seq
        self._ready_seq = listing.seq_max
        self._retry_after.clear()
        self._refusals.clear()
        self._confirmed.clear()
        self._holding.clear()
        self._held_epoch = -1
        self.stats.sessions += 1
        if self.on_connected is not None:
            self.on_connected()

    # -- events -------------------------------------------------------------------------
    def _apply(self, event: pb.Event) -> None:
        if event.seq <= self.seq:
            return
        self.seq = event.seq
        self._dirty = True
        self.stats.events += 1
        kind = event.WhichOneof("subject")
        deleted = event.type in _DELETED
        if kind == "host":
            if deleted:
                self.view.delete_host(event.host.id)
            else:
                self.view.upsert_host(host_view(event.host))
        elif kind == "instance":
            self._apply_instance(event.seq, event.instance, deleted)
        elif kind == "network":
            if deleted:
                self.hooks.network_deleted(event.network.id)
            else:
                net = event.network
                self.hooks.network(NetworkInfo(net.id, net.name, net.cidr))
                # A network with addresses again may unblock Held VMs.
                self.view.capacity_epoch += 1

    def _apply_instance(self, seq: int, inst: pb.Instance, deleted: bool) -> None:
        confirmed = self._confirmed.get(inst.id)
        if confirmed is not None:
            if seq <= confirmed:
                return  # our ActivateInstances answer already told us more
            del self._confirmed[inst.id]
        self._holding.discard(inst.id)
        if deleted:
            old = self.view.delete_instance(inst.id)
            self._retry_after.pop(inst.id, None)
            self._refusals.pop(inst.id, None)
            self._start_failures.pop(inst.id, None)
            self.hooks.post_destroy(old or vm_spec(inst))
            return
        vm = vm_spec(inst)
        old = self.view.upsert_instance(vm)
        self.hooks.observe(vm)
        if (old is not None and old.state is VmState.ACTIVATING and old.host_id
                and vm.state is VmState.HELD):
            self._start_failed(vm, old.host_id)
        elif vm.state is VmState.OTHER:
            self._start_failures.pop(vm.id, None)

    def _start_failed(self, vm: VmSpec, host_id: int) -> None:
        self._start_failures[vm.id] += 1
        n = self._start_failures[vm.id]
        seconds = min(MAX_BAN_SECONDS, self.config.start_failure_backoff_seconds * 2 ** (n - 1))
        self.view.avoid(vm.id, host_id, vm.state_reason or "start failed", seconds)
        log.info("instance %d failed to start on host %d (%s); kept off it for %.0fs",
                 vm.id, host_id, vm.state_reason, seconds)

    # -- placing ---------------------------------------------------------------------------
    def _work(self) -> list[int]:
        view = self.view
        if self._confirmed:  # answers the event stream has caught up with
            self._confirmed = {i: s for i, s in self._confirmed.items() if s > self.seq}
        due = {vm for vm, seq in self._retry_after.items() if seq <= self.seq}
        for vm_id in due:
            del self._retry_after[vm_id]
        pending = sorted(v for v in view.pending
                         if v not in self._retry_after and v not in self._holding)
        if view.capacity_epoch != self._held_epoch:
            self._held_epoch = view.capacity_epoch
            held = sorted(v for v in view.held if v not in self._retry_after)
        else:
            held = sorted(v for v in due if v in view.held)
        return pending + held

    def _schedule(self) -> None:
        work = self._work()
        if not work:
            return
        self.stats.passes += 1
        batch: dict[int, tuple[VmSpec, VmSpec]] = {}
        holds: list[pl.Hold] = []
        for vm_id in work:
            vm = self.view.instance(vm_id)
            if vm is None or vm.state not in (VmState.PENDING, VmState.HELD):
                continue
            self.stats.decisions += 1
            decision = self.placer.decide(vm)
            if isinstance(decision, Chosen):
                host = self.view.host(decision.host_id)
                assert host is not None
                prepared = self.hooks.pre_create(vm, host)
                if not prepared.refusal:
                    ips = prepared.nic_ips
                    assumed = dataclasses.replace(
                        vm, state=VmState.ACTIVATING, host_id=host.id,
                        charged_hosts=(host.id,),
                        nic_ips=tuple(new or old for new, old in zip(
                            ips, vm.nic_ips, strict=False)) if ips else vm.nic_ips)
                    self.view.upsert_instance(assumed)
                    batch[vm.id] = (vm, assumed)
                    if len(batch) >= self.config.batch_size:
                        self._propose(batch)
                        batch = {}
                        self._drain()
                        if self._relisted is not None:
                            return  # the rest is decided again on the new listing
                    continue
                reason = prepared.refusal
            else:
                reason = decision.reason
            if vm.state is VmState.PENDING:
                holds.append(pl.Hold(instance_id=vm.id, reason=reason))
        if batch:
            self._propose(batch)
        if holds:
            self._hold(holds)

    def _propose(self, batch: dict[int, tuple[VmSpec, VmSpec]]) -> None:
        placements = [
            pl.Placement(instance_id=vm_id, host_id=assumed.host_id,
                         nic_ips=[new if new != old else "" for new, old in zip(
                             assumed.nic_ips, prior.nic_ips, strict=False)])
            for vm_id, (prior, assumed) in batch.items()
        ]
        self.stats.proposed += len(placements)
        try:
            resp = self.client.activate(placements)
        except TashiError:
            for prior, assumed in batch.values():
                self.view.upsert_instance(prior, quiet=True)
                self.hooks.cancel(assumed)
            raise
        holds: list[pl.Hold] = []
        for result in resp.results:
            entry = batch.get(result.instance_id)
            if entry is None:
                continue
            prior, assumed = entry
            if result.accepted:
                self.stats.accepted += 1
                vm = vm_spec(result.instance) if result.HasField("instance") else assumed
                self.view.upsert_instance(vm)
                self.hooks.observe(vm)
                self._confirmed[vm.id] = resp.seq
                self._refusals.pop(vm.id, None)
                continue
            self.stats.refused += 1
            self.view.upsert_instance(prior, quiet=True)
            self.hooks.cancel(assumed)
            self._refusals[prior.id] += 1
            if self._refusals[prior.id] < self.config.max_refusals:
                self._retry_after[prior.id] = resp.seq
            elif prior.state is VmState.PENDING:
                del self._refusals[prior.id]
                holds.append(pl.Hold(instance_id=prior.id,
                                     reason=f"the cluster manager refused it: {result.reason}"))
            log.debug("instance %d refused on host %d: %s", prior.id, assumed.host_id,
                      result.reason)
        if holds:
            self._hold(holds)

    def _hold(self, holds: list[pl.Hold]) -> None:
        instances = self.client.hold(holds)
        held = {inst.id for inst in instances if inst.status.state == pb.INSTANCE_STATE_HELD}
        self.stats.held += len(held)
        # Those the CM held change by event; the others are decided again next time.
        self._holding.update(h.instance_id for h in holds if h.instance_id in held)
