"""Instance operations users call: validate, check ownership and state, stage the change."""

from __future__ import annotations

import time

from tashi.cm import validation as v
from tashi.cm.cluster import Cluster, Txn, copy_of
from tashi.cm.errors import exists, invalid, precondition
from tashi.cm.lifecycle import DESTROY_AT_ONCE, USER_ACTIONS, not_allowed
from tashi.runtime.macs import stable_mac
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb

INTERNAL_HINT = "__"


def _template(c: Cluster, spec: pb.Instance) -> pb.Instance:
    """Validate what a user may set and return a clean template."""
    v.check_size(spec.cores, spec.memory_mib, c.cfg.max_cores, c.cfg.max_memory)
    tmpl = pb.Instance(cores=spec.cores, memory_mib=spec.memory_mib)
    for disk in spec.disks:
        v.check_disk(disk.uri, c.images)
        tmpl.disks.add(uri=disk.uri, persistent=disk.persistent)
    default_net = next((n.id for n in c.networks.values() if n.default), 0)
    for nic in spec.nics:
        net_id = nic.network_id or default_net
        if not net_id:
            raise invalid("a NIC names no network and there is no default network")
        if net_id not in c.networks:
            raise invalid(f"no network with id {net_id}")
        tmpl.nics.add(network_id=net_id, mac=v.check_mac(nic.mac) if nic.mac else "",
                      ip=v.check_ip(nic.ip) if nic.ip else "")
    for key, value in spec.hints.items():
        if key.startswith(INTERNAL_HINT):
            continue
        if not key or len(key) > 64 or len(value) > 1024:
            raise invalid(f"hint {key!r} is empty or too long")
        tmpl.hints[key] = value
    if spec.group_name:
        v.check_name("group", spec.group_name)
        tmpl.group_name = spec.group_name
    return tmpl


def create(c: Cluster, actor: str, req: cmpb.CreateInstanceRequest) -> cmpb.CreateInstanceResponse:
    spec = req.instance
    if req.count < 0 or req.count > c.cfg.max_count:
        raise invalid(f"count must be between 0 and {c.cfg.max_count}, got {req.count}")
    v.check_name("instance", spec.name)
    names = [spec.name] if req.count == 0 else [f"{spec.name}-{i}" for i in range(req.count)]
    if req.count:
        v.check_name("instance", names[-1])

    def body(txn: Txn) -> cmpb.CreateInstanceResponse:
        c.user(actor)
        tmpl = _template(c, spec)
        for name in names:
            if name in c.instance_ids:
                raise exists(f"an instance named {name!r} already exists")
        macs = {n.mac for n in tmpl.nics if n.mac}
        if macs and req.count:
            raise invalid("fixed MAC addresses cannot be shared by several instances")
        resp = cmpb.CreateInstanceResponse()
        now = time.time_ns()
        tmpl.owner = actor
        tmpl.state = pb.INSTANCE_STATE_PENDING
        tmpl.create_time.FromNanoseconds(now)
        tmpl.update_time.FromNanoseconds(now)
        for name in names:
            inst = copy_of(tmpl)
            inst.id = c.next_id(txn, "instance")
            inst.name = name
            for index, nic in enumerate(inst.nics):
                if not nic.mac:
                    nic.mac = stable_mac(inst.id, index)
            txn.put(inst, pb.EVENT_TYPE_INSTANCE_CREATED, f"created by {actor}")
            resp.instances.append(inst)
        return resp

    return c.mutate(actor, req.request_id, "CreateInstance", cmpb.CreateInstanceResponse, body)


def remove(txn: Txn, inst: pb.Instance, message: str) -> pb.Instance:
    """Stage the end of an instance: one INSTANCE_DELETED event, state Exited."""
    gone = copy_of(inst)
    gone.state = pb.INSTANCE_STATE_EXITED
    gone.update_time.GetCurrentTime()
    txn.delete(gone, pb.EVENT_TYPE_INSTANCE_DELETED, message)
    return gone


def destroy(c: Cluster, actor: str, req: cmpb.DeleteInstanceRequest) -> cmpb.DeleteInstanceResponse:
    def body(txn: Txn) -> cmpb.DeleteInstanceResponse:
        inst = c.find_instance(req.instance)
        c.check_owner(actor, inst)
        if inst.state in DESTROY_AT_ONCE or not inst.host_id:
            return cmpb.DeleteInstanceResponse(
                instance=remove(txn, inst, f"destroyed by {actor}"))
        if inst.state == pb.INSTANCE_STATE_DESTROYING:
            txn.after.append(lambda: c.dispatch("destroy", inst.id))
            return cmpb.DeleteInstanceResponse(instance=inst)
        new = transition(txn, inst, pb.INSTANCE_STATE_DESTROYING, f"destroy requested by {actor}")
        if inst.state != pb.INSTANCE_STATE_ORPHANED:
            txn.after.append(lambda: c.dispatch("destroy", inst.id))
        return cmpb.DeleteInstanceResponse(instance=new)

    return c.mutate(actor, req.request_id, "DeleteInstance", cmpb.DeleteInstanceResponse, body)


def transition(txn: Txn, inst: pb.Instance, state: pb.InstanceState, message: str,
               reason: str = "") -> pb.Instance:
    new = copy_of(inst)
    new.state = state
    new.state_reason = reason
    new.update_time.GetCurrentTime()
    txn.put(new, pb.EVENT_TYPE_INSTANCE_UPDATED, message)
    return new


def act(c: Cluster, actor: str, action: str, request_id: str, ref: cmpb.InstanceRef,
        resp_cls: type, target: cmpb.HostRef | None = None) -> object:
    """shutdown, pause, unpause, suspend, resume, migrate."""
    allowed, entering = USER_ACTIONS[action]
    method = f"{action.capitalize()}Instance"

    def body(txn: Txn) -> object:
        inst = c.find_instance(ref)
        c.check_owner(actor, inst)
        if inst.state not in allowed:
            raise precondition(not_allowed(action, inst.state))
        new = copy_of(inst)
        new.state = entering
        new.state_reason = ""
        new.update_time.GetCurrentTime()
        if action == "shutdown":
            new.hints["__prior_state"] = str(inst.state)
        if action == "migrate":
            assert target is not None
            dest = c.find_host(target)
            check_migration_target(c, new, dest)
            new.hints["__migrate_target"] = str(dest.id)
        txn.put(new, pb.EVENT_TYPE_INSTANCE_UPDATED, f"{action} requested by {actor}")
        if action != "resume":
            txn.after.append(lambda: c.dispatch(action, inst.id))
        return resp_cls(instance=new)

    return c.mutate(actor, request_id, method, resp_cls, body)


def check_migration_target(c: Cluster, inst: pb.Instance, dest: pb.Host) -> None:
    if dest.id == inst.host_id:
        raise precondition(f"instance {inst.name!r} already runs on {dest.name}")
    if not dest.up:
        raise precondition(f"host {dest.name} is down")
    if dest.state != pb.HOST_STATE_NORMAL:
        raise precondition(f"host {dest.name} is not Normal, so it takes no instances")
    if dest.reserved_for and inst.owner not in dest.reserved_for:
        raise precondition(f"host {dest.name} is reserved for {', '.join(dest.reserved_for)}")
    cores, mem = c.free(dest)
    if cores < inst.cores or mem < inst.memory_mib:
        raise precondition(f"host {dest.name} has {cores} cores and {mem} MiB free; "
                           f"{inst.name!r} needs {inst.cores} cores and {inst.memory_mib} MiB")
