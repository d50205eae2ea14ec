"""Calls from the cluster manager to node managers, made in the background
after the change that asked for them has committed.

Each call is one row of `CALLS`: which transitional state it starts from,
the node manager method, and where the instance goes on success.  The
answer is applied under the lock only if the instance is still where the
call left it, so late answers never undo newer changes.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc

from tashi.cm.cluster import Cluster, Txn, move
from tashi.cm.instances import remove
from tashi.runtime.nm_client import NodeManagerClients
from tashi.runtime.rpc import TashiError
from tashi.runtime.tls import Tls
from tashi.v1 import node_manager_pb2 as nmpb
from tashi.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)
S = pb


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
    def __init__(self, cluster: Cluster, workers: int = 32, tls: Tls | None = None) -> None:
        self.cluster = cluster
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nm-call")
        self.nms = NodeManagerClients(
            user=cluster.cfg.admins[0] if cluster.cfg.admins else "root",
            timeout=cluster.cfg.nm_call_seconds, tls=tls)
        cluster.dispatch = self.submit

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.nms.close()

    def submit(self, action: str, iid: int) -> None:
        try:
            self.pool.submit(self._run, action, iid)
        except RuntimeError:  # shutting down
            pass

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

    def _finish(self, iid: int, expect: int, change: Any) -> None:
        """Apply `change(txn, inst)` if the instance is still in `expect`."""
        c = self.cluster

        def body(txn: Txn) -> None:
            inst = c.instances.get(iid)
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
                vm = nm.resume_vm(nmpb.ResumeVmRequest(
                    request_id=f"resume-{iid}-{inst.update_time.ToNanoseconds()}",
                    instance=inst, suspend_file=suspend_file, networks=self._networks(inst))).vm
            else:
                vm = nm.start_vm(nmpb.StartVmRequest(
                    request_id=f"start-{iid}-{inst.update_time.ToNanoseconds()}",
                    instance=inst, networks=self._networks(inst))).vm
        except TashiError as exc:
            reason = f"start on {host.name} failed: {exc}"

            self._finish(iid, S.INSTANCE_STATE_ACTIVATING, lambda txn, cur: move(
                txn, cur, S.INSTANCE_STATE_HELD, reason, reason))
            return

        def running(txn: Txn, cur: pb.Instance) -> None:
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
            self._finish(iid, call.expect, suspended)
        elif call.done != call.expect:
            self._finish(iid, call.expect, lambda txn, cur: move(
                txn, cur, call.done, f"{action} done on {host.name}"))

    def _migrate(self, iid: int) -> None:
        c = self.cluster
        snap = self._snapshot(iid, S.INSTANCE_STATE_MIGRATE_PREP)
        if snap is None:
            return
        inst, source = snap
        with c.lock:
            target = c.hosts.get(inst.status.migration_target_host_id)
        step = "prepare"

        def back(reason: str) -> None:
            def change(txn: Txn, cur: pb.Instance) -> None:
                move(txn, cur, S.INSTANCE_STATE_RUNNING, reason, reason)
            for state in (S.INSTANCE_STATE_MIGRATE_PREP, S.INSTANCE_STATE_MIGRATE_TRANS):
                self._finish(iid, state, change)

        if target is None:
            back("migration target host is gone")
            return
        src, dst = self.nms.get(source.nm_address), self.nms.get(target.nm_address)
        rid = f"migrate-{iid}-{inst.update_time.ToNanoseconds()}"
        try:
            cookie = dst.prepare_receive_vm(nmpb.PrepareReceiveVmRequest(
                request_id=rid, instance=inst, networks=self._networks(inst))).cookie
            src.prepare_source_vm(nmpb.PrepareSourceVmRequest(request_id=rid, instance_id=iid))
            self._finish(iid, S.INSTANCE_STATE_MIGRATE_PREP, lambda txn, cur: move(
                txn, cur, S.INSTANCE_STATE_MIGRATE_TRANS, f"sending to {target.name}"))
            step = "send"
            src.send_vm(nmpb.SendVmRequest(request_id=rid, instance_id=iid,
                                           target_uri=target.nm_address, cookie=cookie))
            step = "receive"
            vm = dst.receive_vm(nmpb.ReceiveVmRequest(request_id=rid, instance_id=iid,
                                                      cookie=cookie)).vm
        except TashiError as exc:
            back(f"migration to {target.name} failed at {step}: {exc}")
            return

        def arrived(txn: Txn, cur: pb.Instance) -> None:
            def edit(status: pb.InstanceStatus) -> None:
                status.host_id, status.host_name = target.id, target.name
                status.vm_id = vm.vm_id or status.vm_id
            move(txn, cur, S.INSTANCE_STATE_RUNNING, f"migrated to {target.name}", edit=edit)

        self._finish(iid, S.INSTANCE_STATE_MIGRATE_TRANS, arrived)
