"""Calls from the cluster manager to node managers, made in the background
after the change that asked for them has committed.

Each call is one row of `CALLS`: which transitional state it starts from,
the node manager method, and where the instance goes on success.  The
answer is applied under the lock only if the instance is still where the
call left it, so late answers never undo newer changes.

Starts, the bulk of the calls when a cluster fills, go by host: the starts
placed on one host while its previous call was in flight leave together in
one StartVms call, and their answers are committed in one transaction.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from tashi.cm.cluster import Cluster
from tashi.cm.instances import remove
from tashi.cm.lifecycle import stray_copy
from tashi.cm.txn import Txn, move
from tashi.runtime.nm_client import MAX_STARTS, NodeManagerClients
from tashi.runtime.rpc import TashiError
from tashi.runtime.tls import Tls
from tashi.v1 import node_manager_pb2 as nmpb
from tashi.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)
S = pb
R = TypeVar("R")


# A start that failed with one of these may have run all the same (the answer
# was lost, or came too late): it is asked once more, after a pause, before the
# instance is held.  A node manager's start is idempotent (it answers with the
# VM it already runs), so the second answer says what the first would have.
UNCERTAIN = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE,
                       grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN})
ASK_AGAIN_SECONDS = 1.0


def ask_twice(call: Callable[[], R]) -> R:
    """`call()`, once more after ASK_AGAIN_SECONDS if it failed uncertainly."""
    try:
        return call()
    except TashiError as exc:
        if exc.code not in UNCERTAIN:
            raise
        log.warning("a start's answer did not come (%s); asking again", exc)
    time.sleep(ASK_AGAIN_SECONDS)
    return call()


@dataclass(frozen=True)
class Call:
    expect: pb.InstanceState  # state the instance must be in when the answer arrives
    done: pb.InstanceState  # state after success (EXITED: removed)
    undo: pb.InstanceState  # state after failure


CALLS = {
    "pause": Call(S.INSTANCE_STATE_PAUSING, S.INSTANCE_STATE_PAUSED, S.INSTANCE_STATE_RUNNING),
    "unpause": Call(S.INSTANCE_STATE_UNPAUSING, S.INSTANCE_STATE_RUNNING,
                    S.INSTANCE_STATE_PAUSED),
    "shutdown": Call(S.INSTANCE_STATE_SHUTTING_DOWN, S.INSTANCE_STATE_SHUTTING_DOWN,
                     S.INSTANCE_STATE_RUNNING),
    "destroy": Call(S.INSTANCE_STATE_DESTROYING, S.INSTANCE_STATE_EXITED,
                    S.INSTANCE_STATE_DESTROYING),
    "suspend": Call(S.INSTANCE_STATE_SUSPENDING, S.INSTANCE_STATE_SUSPENDED,
                    S.INSTANCE_STATE_RUNNING),
}


class Dispatcher:
    def __init__(self, cluster: Cluster, tls: Tls | None = None) -> None:
        self.cluster = cluster
        # Every call holds a thread while it waits on its host (--nm-calls, 64).  Too
        # few and calls queue behind slow hosts; too many and their threads, waking
        # together as answers come in, keep the GIL from whoever holds the cluster's
        # lock.  bench_fleet, 1,000 hosts, same hour: with 256 threads the CM spent
        # 0.76-1.06 ms per VM in the fill (401-551 VMs/s), with 64 0.51-0.68
        # (548-688/s), with 32 0.48-0.54 (637-745/s); with 64, the churn's
        # Activating -> Running p99 stayed 0.18-0.35 s.
        self.pool = ThreadPoolExecutor(max_workers=cluster.cfg.nm_calls,
                                       thread_name_prefix="nm-call")
        self.nms = NodeManagerClients(
            user=cluster.cfg.admins[0] if cluster.cfg.admins else "root",
            timeout=cluster.cfg.nm_call_seconds, tls=tls)
        # Starts waiting for their host's call, by host id; hosts with a call out.
        self._starts: dict[int, list[int]] = {}
        self._starting: set[int] = set()
        self._starts_lock = threading.Lock()
        cluster.dispatch = self.submit
        cluster.end_stray = self.end_stray
        self._strays: set[tuple[int, int]] = set()  # (host id, instance id) being ended

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.nms.close()

    def submit(self, action: str, iid: int) -> None:
        try:
            if action == "start":
                self._queue_start(iid)
            else:
                self.pool.submit(self._run, action, iid)
        except RuntimeError:  # shutting down
            pass

    def end_stray(self, host_id: int, iid: int) -> None:
        """Destroy the VM a host runs for instance `iid`, which no longer exists."""
        with self.cluster.lock:
            host = self.cluster.hosts.get(host_id)
            if host is None or not host.nm_address or (host_id, iid) in self._strays:
                return
            self._strays.add((host_id, iid))
        address = host.nm_address

        def end() -> None:
            try:
                self.nms.get(address).simple_action("destroy", iid, f"destroy-stray-{iid}")
            except TashiError as exc:
                if exc.code != grpc.StatusCode.NOT_FOUND:
                    log.warning("could not end host %s's VM of deleted instance %d: %s",
                                host.name, iid, exc)
            finally:
                with self.cluster.lock:
                    self._strays.discard((host_id, iid))

        try:
            self.pool.submit(end)
        except RuntimeError:  # shutting down
            with self.cluster.lock:
                self._strays.discard((host_id, iid))

    # -- starts, by host ------------------------------------------------------------
    def _queue_start(self, iid: int) -> None:
        """Queue the start for its host; one call per host is out at a time and
        takes every start queued for it meanwhile."""
        inst = self.cluster.instances.get(iid)
        host_id = inst.status.host_id if inst is not None else 0
        with self._starts_lock:
            self._starts.setdefault(host_id, []).append(iid)
            if host_id in self._starting:
                return
            self._starting.add(host_id)
        self.pool.submit(self._drain_starts, host_id)

    def _drain_starts(self, host_id: int) -> None:
        while True:
            with self._starts_lock:
                queued = self._starts.get(host_id, [])
                batch, rest = queued[:MAX_STARTS], queued[MAX_STARTS:]
                if rest:
                    self._starts[host_id] = rest
                else:
                    self._starts.pop(host_id, None)
                if not batch:
                    self._starting.discard(host_id)
                    return
            try:
                self._start_many(batch)
            except Exception:
                log.exception("starts of instances %s failed unexpectedly", batch)

    def _start_many(self, iids: list[int]) -> None:
        """Start `iids` (placed on one host) in one StartVms call; resumes go one by
        one (ResumeVm).  The answers are applied in one transaction, each only if
        its instance is still Activating on the host the call went to."""
        c = self.cluster
        calls: dict[str, tuple[pb.Host, list[nmpb.StartVmRequest]]] = {}
        with c.lock:
            for iid in iids:
                snap = self._snapshot(iid, S.INSTANCE_STATE_ACTIVATING)
                if snap is None:
                    continue
                inst, host = snap
                if inst.status.suspend_image:
                    self.pool.submit(self._run, "start", iid)
                    continue
                calls.setdefault(host.nm_address, (host, []))[1].append(nmpb.StartVmRequest(
                    request_id=f"start-{iid}-{inst.update_time.ToNanoseconds()}",
                    instance=inst, networks=self._networks(inst)))
        for address, (host, requests) in calls.items():
            try:
                nm = self.nms.get(address)
                answers: list[nmpb.VmInfo | TashiError] = ask_twice(
                    lambda: nm.start_vms(requests))  # noqa: B023 - called at once
            except TashiError as exc:
                answers = [exc] * len(requests)
            self._started(host, [(r.instance.id, a) for r, a in zip(requests, answers,
                                                                    strict=True)])

    def _started(self, host: pb.Host, answers: list[tuple[int, nmpb.VmInfo | TashiError]]
                 ) -> None:
        def apply(txn: Txn, iid: int, answer: nmpb.VmInfo | TashiError) -> None:
            if not isinstance(answer, TashiError):
                self.cluster.learned(host.id, answer.report_seq)
            cur = txn.instance(iid)
            if not isinstance(answer, TashiError) and (
                    cur is None or stray_copy(cur.status, host.id)):
                # Deleted, or placed again on another host, while this start was out:
                # what it ran on this host is no instance's VM.  (One waiting for a
                # host is found running here by this host's report.)
                log.warning("host %s started instance %d, which is %s; ending that VM",
                            host.name, iid, "deleted" if cur is None else
                            f"on {cur.status.host_name or 'no host'}")
                txn.after.append(lambda: self.end_stray(host.id, iid))
                return
            if cur is None or cur.status.state != S.INSTANCE_STATE_ACTIVATING or \
                    cur.status.host_id != host.id:
                return
            if isinstance(answer, TashiError):
                reason = f"start on {host.name} failed: {answer}"
                move(txn, cur, S.INSTANCE_STATE_HELD, reason, reason)
                return
            state = answer.state if answer.state in (S.INSTANCE_STATE_RUNNING,
                                                     S.INSTANCE_STATE_PAUSED) \
                else S.INSTANCE_STATE_RUNNING

            def edit(status: pb.InstanceStatus) -> None:
                status.vm_id = answer.vm_id
            move(txn, cur, state, f"started on {host.name}", edit=edit)

        def body(txn: Txn) -> None:
            for iid, answer in answers:
                apply(txn, iid, answer)

        try:
            self.cluster.write("tashi-cm", body)
        except Exception:
            # One answer the transaction could not take must not lose the others.
            log.exception("the answers of %d starts on %s could not be applied together; "
                          "applying them one by one", len(answers), host.name)
            for iid, answer in answers:
                try:
                    self.cluster.write("tashi-cm", lambda txn, i=iid, a=answer: apply(txn, i, a))  # type: ignore[misc]
                except Exception:
                    log.exception("start of instance %d on %s: its answer could not be "
                                  "applied", iid, host.name)

    def _run(self, action: str, iid: int) -> None:
        try:
            if action == "start":
                self._start(iid)
            elif action == "migrate":
                self._migrate(iid)
            else:
                self._simple(action, iid)
        except Exception:
            log.exception("%s of instance %d failed unexpectedly", action, iid)

    def _snapshot(self, iid: int, expect: int) -> tuple[pb.Instance, pb.Host] | None:
        c = self.cluster
        with c.lock:
            inst = c.instances.get(iid)
            if inst is None or inst.status.state != expect:
                return None
            host = c.hosts.get(inst.status.host_id)
            if host is None or not host.nm_address:
                # A host registered without an address (a synthetic host, or an
                # agent that reports by itself) is never called; its agent
                # moves the instance on with ReportInstances.
                return None
            return inst, host

    def _finish(self, iid: int, expect: int, change: Any,
                answered: tuple[int, int] | None = None) -> None:
        """Apply `change(txn, inst)` if the instance is still in `expect`;
        `answered`: (host id, report_seq) of the node manager's answer."""
        c = self.cluster

        def body(txn: Txn) -> None:
            inst = c.instances.get(iid)
            if inst is not None and answered is not None:
                c.learned(*answered, iid)
            if inst is not None and inst.status.state == expect:
                change(txn, inst)

        c.write("tashi-cm", body)

    def _networks(self, inst: pb.Instance) -> list[pb.Network]:
        with self.cluster.lock:
            ids = {n.network_id for n in inst.spec.nics}
            return [self.cluster.networks[i] for i in sorted(ids) if i in self.cluster.networks]

    def _start(self, iid: int) -> None:
        snap = self._snapshot(iid, S.INSTANCE_STATE_ACTIVATING)
        if snap is None:
            return
        inst, host = snap
        nm = self.nms.get(host.nm_address)
        suspend_file = inst.status.suspend_image
        try:
            if suspend_file:
                resume = nmpb.ResumeVmRequest(
                    request_id=f"resume-{iid}-{inst.update_time.ToNanoseconds()}",
                    instance=inst, suspend_file=suspend_file, networks=self._networks(inst))
                vm = ask_twice(lambda: nm.resume_vm(resume)).vm
            else:
                start = nmpb.StartVmRequest(
                    request_id=f"start-{iid}-{inst.update_time.ToNanoseconds()}",
                    instance=inst, networks=self._networks(inst))
                vm = ask_twice(lambda: nm.start_vm(start)).vm
        except TashiError as exc:
            reason = f"start on {host.name} failed: {exc}"

            self._finish(iid, S.INSTANCE_STATE_ACTIVATING, lambda txn, cur: move(
                txn, cur, S.INSTANCE_STATE_HELD, reason, reason))
            return

        def running(txn: Txn, cur: pb.Instance) -> None:
            self.cluster.learned(host.id, vm.report_seq)
            state = vm.state if vm.state in (S.INSTANCE_STATE_RUNNING, S.INSTANCE_STATE_PAUSED) \
                else S.INSTANCE_STATE_RUNNING

            def edit(status: pb.InstanceStatus) -> None:
                status.vm_id = vm.vm_id
            move(txn, cur, state, f"started on {host.name}", edit=edit)

        self._finish(iid, S.INSTANCE_STATE_ACTIVATING, running)

    def _simple(self, action: str, iid: int) -> None:
        call = CALLS[action]
        snap = self._snapshot(iid, call.expect)
        if snap is None:
            return
        inst, host = snap
        nm = self.nms.get(host.nm_address)
        try:
            answer = nm.simple_action(action, iid,
                                      f"{action}-{iid}-{inst.update_time.ToNanoseconds()}")
        except TashiError as exc:
            if action == "destroy" and exc.code == grpc.StatusCode.NOT_FOUND:
                self._finish(iid, call.expect, lambda txn, cur: remove(
                    txn, cur, f"destroyed (it was no longer on {host.name})"))
                return
            reason = f"{action} on {host.name} failed: {exc}"
            log.warning("instance %d: %s", iid, reason)
            if action != "destroy":
                def undo(txn: Txn, cur: pb.Instance) -> None:
                    # A shutdown may have started from Paused: go back to where it was.
                    prior = cur.status.prior_state
                    move(txn, cur, prior or call.undo, reason, reason)
                self._finish(iid, call.expect, undo)
            return
        answered = (host.id, answer.vm.report_seq)  # type: ignore[attr-defined]
        if call.done == S.INSTANCE_STATE_EXITED:
            self._finish(iid, call.expect, lambda txn, cur: remove(
                txn, cur, f"destroyed on {host.name}"))
        elif call.done == S.INSTANCE_STATE_SUSPENDED:
            assert isinstance(answer, nmpb.SuspendVmResponse)
            suspend_file = answer.suspend_file

            def suspended(txn: Txn, cur: pb.Instance) -> None:
                def edit(status: pb.InstanceStatus) -> None:
                    status.suspend_image = suspend_file
                    status.suspend_host_id = host.id
                move(txn, cur, S.INSTANCE_STATE_SUSPENDED, f"suspended on {host.name}", edit=edit)
            self._finish(iid, call.expect, suspended, answered)
        else:  # a shutdown stays Shutting Down until the host reports the VM gone
            self._finish(iid, call.expect, lambda txn, cur: call.done != call.expect and move(
                txn, cur, call.done, f"{action} done on {host.name}"), answered)

    def _migrate(self, iid: int) -> None:
        """Tashi's four steps: the target claims and readies, the source checks,
        the source's hypervisor sends (MigrateTrans), the target adopts.  Any
        failure ends in `_migration_failed`, which finds where the VM really is."""
        c = self.cluster
        snap = self._snapshot(iid, S.INSTANCE_STATE_MIGRATE_PREP)
        if snap is None:
            return
        inst, source = snap
        with c.lock:
            target = c.hosts.get(inst.status.migration_target_host_id)
        if target is None or not target.nm_address:
            self._settle_migration(iid, S.INSTANCE_STATE_RUNNING, source,
                                   "migration target host is gone or has no node manager")
            return
        src, dst = self.nms.get(source.nm_address), self.nms.get(target.nm_address)
        rid = f"migrate-{iid}-{inst.update_time.ToNanoseconds()}"
        step, cookie = "prepare", ""
        try:
            ready = dst.prepare_receive_vm(nmpb.PrepareReceiveVmRequest(
                request_id=rid, instance=inst, networks=self._networks(inst)))
            cookie = ready.cookie
            src.prepare_source_vm(nmpb.PrepareSourceVmRequest(request_id=rid, instance_id=iid))
            self._finish(iid, S.INSTANCE_STATE_MIGRATE_PREP, lambda txn, cur: move(
                txn, cur, S.INSTANCE_STATE_MIGRATE_TRANS, f"sending to {target.name}"))
            step = "send"
            src.send_vm(nmpb.SendVmRequest(
                request_id=rid, instance_id=iid, target_uri=target.capabilities.migration_uri,
                cookie=cookie, paths=ready.paths), timeout=c.cfg.migration_seconds)
            step = "receive"
            vm = dst.receive_vm(nmpb.ReceiveVmRequest(request_id=rid, instance_id=iid,
                                                      cookie=cookie)).vm
        except TashiError as exc:
            self._migration_failed(iid, source, target, rid, cookie, step != "prepare",
                                   f"migration to {target.name} failed at {step}: {exc}")
            return
        self._settle_migration(iid, S.INSTANCE_STATE_RUNNING, target,
                               f"migrated to {target.name}", vm_id=vm.vm_id, done=True,
                               report_seq=vm.report_seq)

    def _migration_failed(self, iid: int, source: pb.Host, target: pb.Host, rid: str,
                          cookie: str, sent: bool, reason: str) -> None:
        """Release the target's claim at once and settle the instance where it runs:
        on the source if nothing was sent; else on the target if it arrived after
        all, on the source if it is still there, Orphaned (on the host it left
        for) when neither can say, until that host's report does.  Never removed:
        either host may still run it."""
        log.warning("instance %d: %s", iid, reason)
        src, dst = self.nms.get(source.nm_address), self.nms.get(target.nm_address)
        target_knows = True
        if cookie:
            try:
                answer = dst.cancel_receive_vm(nmpb.CancelReceiveVmRequest(
                    request_id=rid + "-cancel", instance_id=iid, cookie=cookie))
                if answer.arrived:
                    self._settle_migration(iid, S.INSTANCE_STATE_RUNNING, target,
                                           f"migrated to {target.name} ({reason}, yet it "
                                           "arrived)", vm_id=answer.vm.vm_id, done=True,
                                           report_seq=answer.vm.report_seq)
                    return
            except TashiError as exc:
                target_knows = False
                log.warning("instance %d: could not release the claim on %s: %s", iid,
                            target.name, exc)
        if not sent:
            self._settle_migration(iid, S.INSTANCE_STATE_RUNNING, source, reason)
            return
        at_source: bool | None
        try:
            at_source = src.get_vm(iid).state in (S.INSTANCE_STATE_RUNNING,
                                                  S.INSTANCE_STATE_PAUSED)
        except TashiError as exc:
            at_source = False if exc.code == grpc.StatusCode.NOT_FOUND else None
        if at_source is False and not target_knows:
            self._settle_migration(
                iid, S.INSTANCE_STATE_ORPHANED, target,
                f"{reason}; it left {source.name} and {target.name} has not said whether it "
                "arrived: its next report settles it")
        elif at_source is None:
            self._settle_migration(iid, S.INSTANCE_STATE_ORPHANED, source,
                                   f"{reason}; {source.name} does not answer either")
        else:
            self._settle_migration(iid, S.INSTANCE_STATE_RUNNING, source, reason)

    def _settle_migration(self, iid: int, state: pb.InstanceState, host: pb.Host,
                          message: str, vm_id: str = "", done: bool = False,
                          report_seq: int = 0) -> None:
        """End a migration with the instance in `state` on `host`; `done`: it moved
        (no reason kept), else `message` is the reason; `report_seq`: the number
        `host`'s node manager gave its answer."""
        def change(txn: Txn, cur: pb.Instance) -> None:
            self.cluster.learned(host.id, report_seq)
            def edit(status: pb.InstanceStatus) -> None:
                status.host_id, status.host_name = host.id, host.name
                status.vm_id = vm_id or status.vm_id
            move(txn, cur, state, message, "" if done else message, edit=edit)

        for expect in (S.INSTANCE_STATE_MIGRATE_PREP, S.INSTANCE_STATE_MIGRATE_TRANS):
            self._finish(iid, expect, change)
