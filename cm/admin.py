"""Admin operations: hosts, reservations, users, networks."""

from __future__ import annotations

from tashi.cm import validation as v
from tashi.cm.cluster import Cluster
from tashi.cm.txn import Txn, copy_of
from tashi.runtime.errors import exists, invalid, not_found, precondition
from tashi.runtime.names import host_state_name
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb


def create_host(c: Cluster, actor: str, req: cmpb.CreateHostRequest) -> cmpb.CreateHostResponse:
    def body(txn: Txn) -> cmpb.CreateHostResponse:
        c.require_admin(actor, "add hosts")
        v.check_name("host", req.name)
        if req.name in c.host_ids:
            raise exists(f"host {req.name!r} is already registered")
        host = pb.Host(id=c.next_id(txn, "host"), name=req.name, state=pb.HOST_STATE_NORMAL,
                       notes=req.notes)
        txn.put(host, pb.EVENT_TYPE_HOST_CREATED, f"added by {actor}")
        return cmpb.CreateHostResponse(host=host)

    return c.mutate(actor, req.request_id, "CreateHost", cmpb.CreateHostResponse, body)


def delete_host(c: Cluster, actor: str, req: cmpb.DeleteHostRequest) -> cmpb.DeleteHostResponse:
    def body(txn: Txn) -> cmpb.DeleteHostResponse:
        c.require_admin(actor, "delete hosts")
        host = c.find_host(req.host)
        use = c.usage.get(host.id)
        if use and use.count:
            raise precondition(f"host {host.name} still holds {use.count} instances; "
                               "destroy or migrate them first")
        txn.delete(host, pb.EVENT_TYPE_HOST_DELETED, f"deleted by {actor}")
        return cmpb.DeleteHostResponse(host=host)

    return c.mutate(actor, req.request_id, "DeleteHost", cmpb.DeleteHostResponse, body)


def set_host_state(c: Cluster, actor: str,
                   req: cmpb.SetHostStateRequest) -> cmpb.SetHostStateResponse:
    def body(txn: Txn) -> cmpb.SetHostStateResponse:
        c.require_admin(actor, "set host states")
        host = c.find_host(req.host)
        if req.state not in (pb.HOST_STATE_NORMAL, pb.HOST_STATE_DRAINED):
            raise invalid("a host state can be set to normal or drained only")
        if host.state == pb.HOST_STATE_VERSION_MISMATCH:
            raise precondition(f"host {host.name} runs a node manager of version "
                               f"{host.version!r} that this cluster manager does not accept")
        new = copy_of(host)
        new.state = req.state
        if new != host:
            txn.put(new, pb.EVENT_TYPE_HOST_UPDATED,
                    f"state set to {host_state_name(req.state)} by {actor}")
        return cmpb.SetHostStateResponse(host=c.host_view(new))

    return c.mutate(actor, req.request_id, "SetHostState", cmpb.SetHostStateResponse, body)


def set_host_notes(c: Cluster, actor: str,
                   req: cmpb.SetHostNotesRequest) -> cmpb.SetHostNotesResponse:
    def body(txn: Txn) -> cmpb.SetHostNotesResponse:
        c.require_admin(actor, "set host notes")
        host = c.find_host(req.host)
        if len(req.notes) > 4096:
            raise invalid("notes are longer than 4096 characters")
        new = copy_of(host)
        new.notes = req.notes
        txn.put(new, pb.EVENT_TYPE_HOST_UPDATED, f"notes set by {actor}")
        return cmpb.SetHostNotesResponse(host=c.host_view(new))

    return c.mutate(actor, req.request_id, "SetHostNotes", cmpb.SetHostNotesResponse, body)


def _reservation(host: pb.Host) -> pb.Reservation:
    return pb.Reservation(host_id=host.id, host_name=host.name, users=list(host.reserved_for))


def add_reservation(c: Cluster, actor: str,
                    req: cmpb.AddReservationRequest) -> cmpb.AddReservationResponse:
    def body(txn: Txn) -> cmpb.AddReservationResponse:
        c.require_admin(actor, "reserve hosts")
        host = c.find_host(req.host)
        if req.user not in c.user_ids:
            raise not_found(f"no user named {req.user!r}")
        new = copy_of(host)
        if req.user not in new.reserved_for:
            new.reserved_for.append(req.user)
            txn.put(new, pb.EVENT_TYPE_HOST_UPDATED, f"reserved for {req.user} by {actor}")
        return cmpb.AddReservationResponse(reservation=_reservation(new))

    return c.mutate(actor, req.request_id, "AddReservation", cmpb.AddReservationResponse, body)


def remove_reservation(c: Cluster, actor: str,
                       req: cmpb.RemoveReservationRequest) -> cmpb.RemoveReservationResponse:
    def body(txn: Txn) -> cmpb.RemoveReservationResponse:
        c.require_admin(actor, "change reservations")
        host = c.find_host(req.host)
        if req.user not in host.reserved_for:
            raise not_found(f"host {host.name} is not reserved for {req.user!r}")
        new = copy_of(host)
        del new.reserved_for[:]
        new.reserved_for.extend(u for u in host.reserved_for if u != req.user)
        txn.put(new, pb.EVENT_TYPE_HOST_UPDATED, f"reservation for {req.user} removed by {actor}")
        return cmpb.RemoveReservationResponse(reservation=_reservation(new))

    return c.mutate(actor, req.request_id, "RemoveReservation",
                    cmpb.RemoveReservationResponse, body)


def get_reservation(c: Cluster, actor: str,
                    req: cmpb.GetReservationRequest) -> cmpb.GetReservationResponse:
    with c.lock:
        c.user(actor)
        return cmpb.GetReservationResponse(reservation=_reservation(c.find_host(req.host)))


def create_user(c: Cluster, actor: str, req: cmpb.CreateUserRequest) -> cmpb.CreateUserResponse:
    def body(txn: Txn) -> cmpb.CreateUserResponse:
        c.require_admin(actor, "add users")
        v.check_user_name(req.name)
        if req.name in c.user_ids:
            raise exists(f"user {req.name!r} already exists")
        user = pb.User(id=c.next_id(txn, "user"), name=req.name)
        txn.put(user, pb.EVENT_TYPE_USER_CREATED, f"added by {actor}")
        return cmpb.CreateUserResponse(user=user_view(c, user))

    return c.mutate(actor, req.request_id, "CreateUser", cmpb.CreateUserResponse, body)


def user_view(c: Cluster, user: pb.User) -> pb.User:
    return pb.User(id=user.id, name=user.name, admin=c.is_admin(user.name))


def create_network(c: Cluster, actor: str,
                   req: cmpb.CreateNetworkRequest) -> cmpb.CreateNetworkResponse:
    def body(txn: Txn) -> cmpb.CreateNetworkResponse:
        c.require_admin(actor, "add networks")
        net = copy_of(req.network)
        if net.kind == pb.NETWORK_KIND_UNSPECIFIED:
            net.kind = pb.NETWORK_KIND_FLAT
        v.check_network(net)
        if net.id in c.networks:
            raise exists(f"network id {net.id} is already used by {c.networks[net.id].name!r}")
        if any(n.name == net.name for n in c.networks.values()):
            raise exists(f"a network named {net.name!r} already exists")
        clash = next((n for n in c.networks.values() if n.kind == net.kind and (
            (n.kind == pb.NETWORK_KIND_VLAN and n.vlan_id == net.vlan_id)
            or (n.kind == pb.NETWORK_KIND_VXLAN and n.vni == net.vni))), None)
        if clash is not None:
            raise exists(f"network {clash.name!r} already uses that VLAN id / VNI")
        if net.default:
            for other in c.networks.values():
                if other.default:
                    old = copy_of(other)
                    old.default = False
                    txn.put(old, pb.EVENT_TYPE_NETWORK_UPDATED, f"{net.name} is the new default")
        txn.put(net, pb.EVENT_TYPE_NETWORK_CREATED, f"added by {actor}")
        return cmpb.CreateNetworkResponse(network=net)

    return c.mutate(actor, req.request_id, "CreateNetwork", cmpb.CreateNetworkResponse, body)


def delete_network(c: Cluster, actor: str,
                   req: cmpb.DeleteNetworkRequest) -> cmpb.DeleteNetworkResponse:
    def body(txn: Txn) -> cmpb.DeleteNetworkResponse:
        c.require_admin(actor, "delete networks")
        net = c.networks.get(req.network_id)
        if net is None:
            raise not_found(f"no network with id {req.network_id}")
        users = [i.name for i in c.instances.values()
                 if any(n.network_id == net.id for n in i.spec.nics)]
        if users:
            raise precondition(f"network {net.name!r} is used by {len(users)} instances "
                               f"(e.g. {users[0]!r}); destroy them first")
        txn.delete(net, pb.EVENT_TYPE_NETWORK_DELETED, f"deleted by {actor}")
        return cmpb.DeleteNetworkResponse(network=net)

    return c.mutate(actor, req.request_id, "DeleteNetwork", cmpb.DeleteNetworkResponse, body)
