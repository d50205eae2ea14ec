"""The scheduler's proposals, decided here: each placement is re-checked
against the CM's own state in the transaction that assigns the host, so no
two proposals (from one scheduler or several) can overcommit a host."""

from __future__ import annotations

from tashi.cm import validation as v
from tashi.cm.cluster import Cluster
from tashi.cm.txn import Txn, Usage, move
from tashi.runtime.errors import ServiceError
from tashi.runtime.fit import shortfall
from tashi.runtime.names import instance_state_name
from tashi.v1 import placement_pb2 as plpb
from tashi.v1 import resources_pb2 as pb

PLACEABLE = frozenset({pb.INSTANCE_STATE_PENDING, pb.INSTANCE_STATE_HELD})


def _disk_clash(c: Cluster, inst: pb.Instance, claimed: dict[str, bool]) -> str:
    """Why `inst`'s disks cannot run now: an image is used in place by another
    placed instance while this one uses it at all, or the other way round
    (an overlay's base must not change under it).  `claimed` holds the images
    earlier placements of this batch use (True: in place)."""
    mine = {d.uri: d.persistent for d in inst.spec.disks}
    if not mine:
        return ""
    for uri, persistent in mine.items():  # the cluster's index, not a scan of every instance
        users = [("as its persistent disk", c.in_place.get(uri, {}))]
        if persistent:
            users.append(("as a base image", c.as_base.get(uri, {})))
        for how, ids in users:
            other = next((i for i in ids if i != inst.id), 0)
            if other:
                return f"disk {uri} is in use by {c.instances[other].name!r} {how}"
    for uri, persistent in mine.items():
        if uri in claimed and (persistent or claimed[uri]):
            return f"disk {uri} is claimed by another placement"
    return ""


def refusal(c: Cluster, inst: pb.Instance | None, host: pb.Host | None, extra: Usage,
            claimed: dict[str, bool]) -> str:
    """Why this placement cannot be committed now, or '' when it can."""
    if inst is None:
        return "no such instance"
    if inst.status.state not in PLACEABLE:
        return f"instance is {instance_state_name(inst.status.state)}, not Pending or Held"
    if host is None:
        return "no such host"
    if not host.up:
        return f"host {host.name} is down"
    saved_on = inst.status.suspend_host_id if inst.status.suspend_image else 0
    if saved_on and host.id != saved_on:
        holder = c.hosts[saved_on].name if saved_on in c.hosts else str(saved_on)
        return f"its saved state is on host {holder}, where it must resume"
    resuming_home = saved_on == host.id and host.state == pb.HOST_STATE_DRAINED
    if host.state != pb.HOST_STATE_NORMAL and not resuming_home:
        return f"host {host.name} is not Normal"
    if host.reserved_for and inst.owner not in host.reserved_for:
        return f"host {host.name} is reserved for other users"
    cores, mem = c.free(host)
    short = shortfall(cores - extra.cores, mem - extra.memory_mib, inst.spec.cores,
                      inst.spec.memory_mib)
    if short is not None:
        return f"host {host.name} has {short}"
    ready = {s.network_id for s in host.networks if s.ready}
    for nic in inst.spec.nics:
        if nic.network_id not in ready and host.networks:
            return f"network {nic.network_id} is not ready on host {host.name}"
    return _disk_clash(c, inst, claimed)


def activate(c: Cluster, actor: str,
             req: plpb.ActivateInstancesRequest) -> plpb.ActivateInstancesResponse:
    def body(txn: Txn) -> plpb.ActivateInstancesResponse:
        c.require_admin(actor, "place instances")
        resp = plpb.ActivateInstancesResponse()
        extra: dict[int, Usage] = {}
        claimed: dict[str, bool] = {}
        seen: set[int] = set()
        taken: set[tuple[int, str]] = set()  # claimed by earlier placements of this batch
        for p in req.placements:
            inst = c.instances.get(p.instance_id)
            host = c.hosts.get(p.host_id)
            use = extra.setdefault(p.host_id, Usage())
            reason = "instance proposed twice in one batch" if p.instance_id in seen else \
                refusal(c, inst, host, use, claimed)
            if not reason and inst is not None:
                try:
                    ips = [v.check_ip(ip) if ip else "" for ip in p.nic_ips]
                except ServiceError as exc:
                    reason = exc.message
                else:
                    wanted = {(nic.network_id, ip) for nic, ip in
                              zip(inst.status.nics, ips, strict=False) if ip and ip != nic.ip}
                    clash = sorted(a for a in wanted if a in taken or a in c.addresses)
                    if clash:
                        reason = (f"address {clash[0][1]} is already in use on network "
                                  f"{clash[0][0]}")
                    taken |= wanted
            if reason or inst is None or host is None:
                resp.results.add(instance_id=p.instance_id, accepted=False, reason=reason)
                continue
            seen.add(inst.id)

            def placed(status: pb.InstanceStatus, host: pb.Host = host,
                       ips: list[str] = ips) -> None:
                status.host_id, status.host_name = host.id, host.name
                for nic, ip in zip(status.nics, ips, strict=False):
                    if ip:
                        nic.ip = ip

            new = move(txn, inst, pb.INSTANCE_STATE_ACTIVATING, f"placed on {host.name}",
                       edit=placed)
            use.cores += inst.spec.cores
            use.memory_mib += inst.spec.memory_mib
            use.count += 1
            for d in inst.spec.disks:
                claimed[d.uri] = claimed.get(d.uri, False) or d.persistent
            iid = inst.id
            txn.after.append(lambda iid=iid: c.dispatch("start", iid))  # type: ignore[misc]
            resp.results.add(instance_id=inst.id, accepted=True, instance=new)
        return resp

    resp = c.mutate(actor, req.request_id, "ActivateInstances",
                    plpb.ActivateInstancesResponse, body)
    resp.seq = c.events.last_seq
    return resp


def hold(c: Cluster, actor: str, req: plpb.HoldInstancesRequest) -> plpb.HoldInstancesResponse:
    def body(txn: Txn) -> plpb.HoldInstancesResponse:
        c.require_admin(actor, "hold instances")
        resp = plpb.HoldInstancesResponse()
        for h in req.holds:
            inst = c.instances.get(h.instance_id)
            if inst is None or inst.status.state not in PLACEABLE:
                continue
            if inst.status.state == pb.INSTANCE_STATE_HELD and inst.status.reason == h.reason:
                resp.instances.append(inst)
                continue
            resp.instances.append(move(txn, inst, pb.INSTANCE_STATE_HELD, f"held: {h.reason}",
                                       h.reason))
        return resp

    return c.mutate(actor, req.request_id, "HoldInstances", plpb.HoldInstancesResponse, body)
