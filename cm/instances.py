"""Instance operations users call: validate, check ownership and state, stage the change."""

from __future__ import annotations

import time
from collections.abc import Callable

from tashi.cm import images
from tashi.cm import validation as v
from tashi.cm.cluster import Cluster
from tashi.cm.lifecycle import DESTROY_AT_ONCE, USER_ACTIONS, not_allowed
from tashi.cm.txn import Txn, Usage, copy_of, move
from tashi.runtime.errors import exhausted, exists, invalid, precondition
from tashi.runtime.fit import shortfall
from tashi.runtime.macs import stable_mac
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb


def checked_spec(c: Cluster, txn: Txn, owner: str, asked: pb.InstanceSpec) -> pb.InstanceSpec:
    """Validate what `owner` asked for and return a clean spec (network 0 named,
    disks by canonical name with the format the image catalogue recorded)."""
    v.check_size(asked.cores, asked.memory_mib, c.cfg.max_cores, c.cfg.max_memory)
    v.check_disk_count(len(asked.disks))
    v.check_hints(dict(asked.hints))
    spec = pb.InstanceSpec(cores=asked.cores, memory_mib=asked.memory_mib)
    for disk in asked.disks:
        spec.disks.append(images.disk(c, txn, owner, disk))
    v.check_nic_count(len(asked.nics))
    default_net = next((n.id for n in c.networks.values() if n.default), 0)
    for nic in asked.nics:
        net_id = nic.network_id or default_net
        if not net_id:
            raise invalid("a NIC names no network and there is no default network")
        if net_id not in c.networks:
            raise invalid(f"no network with id {net_id}")
        ip = v.check_ip(nic.ip) if nic.ip else ""
        if ip:
            v.check_address_in(ip, c.networks[net_id])
        spec.nics.add(network_id=net_id, mac=v.check_mac(nic.mac) if nic.mac else "", ip=ip)
    spec.hints.update(asked.hints)
    if asked.group_name:
        v.check_name("group", asked.group_name)
        spec.group_name = asked.group_name
    return spec


def create(c: Cluster, actor: str, req: cmpb.CreateInstanceRequest) -> cmpb.CreateInstanceResponse:
    asked = req.instance
    if asked.HasField("status"):
        raise invalid("an instance's status is the cluster manager's to write; send the spec only")
    if req.count < 0 or req.count > c.cfg.max_count:
        raise invalid(f"count must be between 0 and {c.cfg.max_count}, got {req.count}")
    v.check_name("instance", asked.name)
    names = [asked.name] if req.count == 0 else [f"{asked.name}-{i}" for i in range(req.count)]
    if req.count:
        v.check_name("instance", names[-1])

    def body(txn: Txn) -> cmpb.CreateInstanceResponse:
        c.user(actor)
        spec = checked_spec(c, txn, actor, asked.spec)
        for name in names:
            if name in c.instance_ids:
                raise exists(f"an instance named {name!r} already exists")
        check_quota(c, actor, spec, len(names))
        macs = {n.mac for n in spec.nics if n.mac}
        if macs and req.count:
            raise invalid("fixed MAC addresses cannot be shared by several instances")
        resp = cmpb.CreateInstanceResponse()
        now = time.time_ns()
        for name in names:
            inst = pb.Instance(id=c.next_id(txn, "instance"), name=name, owner=actor, spec=spec,
                               status=pb.InstanceStatus(state=pb.INSTANCE_STATE_PENDING))
            inst.create_time.FromNanoseconds(now)
            inst.update_time.FromNanoseconds(now)
            for index, nic in enumerate(spec.nics):
                inst.status.nics.add(network_id=nic.network_id, ip=nic.ip,
                                     mac=nic.mac or stable_mac(inst.id, index))
            txn.put(inst, pb.EVENT_TYPE_INSTANCE_CREATED, f"created by {actor}")
            resp.instances.append(inst)
        return resp

    return c.mutate(actor, req.request_id, "CreateInstance", cmpb.CreateInstanceResponse, body)


def check_quota(c: Cluster, actor: str, spec: pb.InstanceSpec, count: int) -> None:
    """A user's instances stay within the configured quotas; admins have none."""
    if c.is_admin(actor):
        return
    cfg = c.cfg
    have = c.owned.get(actor) or Usage()
    for limit, now, more, what in (
            (cfg.quota_instances, have.count, count, "instances"),
            (cfg.quota_cores, have.cores, count * spec.cores, "cores"),
            (cfg.quota_memory, have.memory_mib, count * spec.memory_mib, "MiB of memory")):
        if limit and now + more > limit:
            raise exhausted(f"{actor} holds {now} {what} and asks for {more} more; the quota "
                            f"is {limit}")


def remove(txn: Txn, inst: pb.Instance, message: str) -> pb.Instance:
    """Stage the end of an instance: one INSTANCE_DELETED event, state Exited."""
    gone = copy_of(inst)
    gone.status.state = pb.INSTANCE_STATE_EXITED
    gone.update_time.GetCurrentTime()
    txn.delete(gone, pb.EVENT_TYPE_INSTANCE_DELETED, message)
    return gone


def destroy(c: Cluster, actor: str, req: cmpb.DeleteInstanceRequest) -> cmpb.DeleteInstanceResponse:
    def body(txn: Txn) -> cmpb.DeleteInstanceResponse:
        inst = c.find_instance(req.instance)
        c.check_owner(actor, inst)
        state = inst.status.state
        if state in DESTROY_AT_ONCE or not inst.status.host_id:
            return cmpb.DeleteInstanceResponse(
                instance=remove(txn, inst, f"destroyed by {actor}"))
        if state == pb.INSTANCE_STATE_DESTROYING:
            txn.after.append(lambda: c.dispatch("destroy", inst.id))
            return cmpb.DeleteInstanceResponse(instance=inst)
        new = move(txn, inst, pb.INSTANCE_STATE_DESTROYING, f"destroy requested by {actor}")
        if state != pb.INSTANCE_STATE_ORPHANED:
            txn.after.append(lambda: c.dispatch("destroy", inst.id))
        return cmpb.DeleteInstanceResponse(instance=new)

    return c.mutate(actor, req.request_id, "DeleteInstance", cmpb.DeleteInstanceResponse, body)


def act(c: Cluster, actor: str, action: str, request_id: str, ref: cmpb.InstanceRef,
        resp_cls: type, target: cmpb.HostRef | None = None) -> object:
    """shutdown, pause, unpause, suspend, resume, migrate."""
    allowed, entering = USER_ACTIONS[action]
    method = f"{action.capitalize()}Instance"

    def body(txn: Txn) -> object:
        inst = c.find_instance(ref)
        c.check_owner(actor, inst)
        if inst.status.state not in allowed:
            raise precondition(not_allowed(action, inst.status.state))

        def edit(status: pb.InstanceStatus) -> None:
            if action == "shutdown":
                status.prior_state = inst.status.state
            if action == "migrate":
                assert target is not None
                dest = c.find_host(target)
                check_migration_target(c, inst, dest)
                migrating_to(status, inst.status.host_id, dest.id)

        new = move(txn, inst, entering, f"{action} requested by {actor}", edit=edit)
        if action != "resume":
            txn.after.append(lambda: c.dispatch(action, inst.id))
        return resp_cls(instance=new)

    return c.mutate(actor, request_id, method, resp_cls, body)


def migrating_to(status: pb.InstanceStatus, source: int, target: int) -> None:
    status.migration_source_host_id = source
    status.migration_target_host_id = target


def is_stale(decayed: Callable[[int], bool], host_id: int, state: int) -> bool:
    """Whether what the CM shows of an instance may be stale (shown `decayed`): it
    is Orphaned, or its host has not been heard from lately (`Cluster.decayed`)."""
    return bool(host_id) and (state == pb.INSTANCE_STATE_ORPHANED or decayed(host_id))


def view(c: Cluster, actor: str, inst: pb.Instance) -> pb.Instance:
    """What `actor` may see of an instance: all of it when it is theirs (or they are
    an admin or a service); else its id, name and state, never its spec (hints,
    disks, NICs), owner or host."""
    stale = is_stale(c.decayed, inst.status.host_id, inst.status.state)
    if inst.owner == actor or c.is_admin(actor):
        if stale:
            inst = copy_of(inst)
            inst.status.decayed = True
        return inst
    return pb.Instance(id=inst.id, name=inst.name,
                       status=pb.InstanceStatus(state=inst.status.state, decayed=stale))


def check_migration_target(c: Cluster, inst: pb.Instance, dest: pb.Host) -> None:
    if dest.id == inst.status.host_id:
        raise precondition(f"instance {inst.name!r} already runs on {dest.name}")
    if not dest.up:
        raise precondition(f"host {dest.name} is down")
    if dest.state != pb.HOST_STATE_NORMAL:
        raise precondition(f"host {dest.name} is not Normal, so it takes no instances")
    if dest.reserved_for and inst.owner not in dest.reserved_for:
        raise precondition(f"host {dest.name} is reserved for {', '.join(dest.reserved_for)}")
    cores, mem = c.free(dest)
    short = shortfall(cores, mem, inst.spec.cores, inst.spec.memory_mib)
    if short is not None:
        raise precondition(f"host {dest.name} cannot take {inst.name!r}: it has {short}")
    source = c.hosts.get(inst.status.host_id)
    for end, host in (("source", source), ("target", dest)):
        if host is None:
            raise precondition(f"the {end} host is gone")
        caps = host.capabilities
        if not caps.live_migration:
            why = caps.reason or "its node manager did not offer live migration"
            raise precondition(f"{end} host {host.name} cannot live-migrate: {why}")
    if not dest.capabilities.migration_uri:
        raise precondition(f"host {dest.name} gives no migration URI")
