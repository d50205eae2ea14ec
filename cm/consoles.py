"""Instances' serial consoles (ReadConsole, AttachConsole), proxied to node managers.

The cluster manager checks who asks (the instance's owner or an admin) and
relays the stream to and from the node manager of the instance's host, which
keeps the log and holds the hypervisor's console.

Proxied rather than handed off with a ticket (a short-lived secret the client
would redeem at the node manager itself): node managers answer the cluster
manager's certificate only (runtime/policy.py), so no user ever needs a way
in to a host; the check is made on every call with what the CM knows then
(an instance that changed hands or moved is checked anew), and there is no
secret to issue, expire or revoke.  The price is that the bytes pass through
the CM and each open console holds one of its server threads, so console
streams are bounded per caller and in all together with the event watches
(`Slots` in slots.py), and never take the threads unary calls need.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from tashi.cm.cluster import Cluster
from tashi.runtime.errors import ServiceError, invalid, precondition, unavailable
from tashi.runtime.names import instance_state_name
from tashi.runtime.nm_client import NodeManagerClient, NodeManagerClients
from tashi.runtime.rpc import StreamCall, TashiError
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import node_manager_pb2 as nmpb

# What a node manager's refusal becomes: the same code when it is about the
# request or the VM; when the node manager cannot serve at all, UNAVAILABLE
# (the cluster manager itself did not fail).
PASSED_ON = {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.INVALID_ARGUMENT}


@dataclass(frozen=True)
class Route:
    nm: NodeManagerClient
    instance_id: int
    name: str
    host: str


def route(c: Cluster, nms: NodeManagerClients, who: str, ref: cmpb.InstanceRef) -> Route:
    """The node manager serving the console of the instance `ref` names, if `who`
    may see it (its owner or an admin)."""
    with c.lock:
        inst = c.find_instance(ref)
        c.check_owner(who, inst)
        host = c.hosts.get(inst.status.host_id) if inst.status.host_id else None
        if host is None:
            raise precondition(f"instance {inst.name!r} is on no host "
                               f"({instance_state_name(inst.status.state)}): no console to "
                               "show")
        if not host.nm_address:
            raise precondition(f"host {host.name} has no node manager to serve the console "
                               f"of {inst.name!r}")
        return Route(nms.get(host.nm_address), inst.id, inst.name, host.name)


def nm_failure(exc: TashiError, r: Route) -> ServiceError:
    where = f"the console of {r.name!r} on {r.host}"
    if exc.code == grpc.StatusCode.NOT_FOUND:
        return precondition(f"{where}: {exc.message}")
    if exc.code in PASSED_ON:
        return ServiceError(exc.code, f"{where}: {exc.message}")
    return unavailable(f"{where}: the node manager could not serve it: "
                       f"{exc.code.name}: {exc.message}")


def read(r: Route, req: cmpb.ReadConsoleRequest,
         context: grpc.ServicerContext) -> Iterator[cmpb.ReadConsoleResponse]:
    call = r.nm.read_vm_console(nmpb.ReadVmConsoleRequest(
        instance_id=r.instance_id, follow=req.follow, tail_bytes=req.tail_bytes))
    context.add_callback(call.cancel)  # the caller hung up: so does the CM, at once
    try:
        for resp in call:
            yield cmpb.ReadConsoleResponse(data=resp.data)
    except TashiError as exc:
        raise nm_failure(exc, r) from None
    finally:
        call.cancel()


def check_read(req: cmpb.ReadConsoleRequest) -> None:
    if req.tail_bytes < 0:
        raise invalid("tail_bytes must not be negative")


def first_message(requests: Iterator[cmpb.AttachConsoleRequest]
                  ) -> cmpb.AttachConsoleRequest | None:
    """The stream's first message, which must name the instance; None when the
    caller sent nothing."""
    try:
        first = next(requests, None)
    except grpc.RpcError:  # the caller went away
        return None
    if first is not None and not first.HasField("instance"):
        raise invalid("the first message of AttachConsole names the instance")
    return first


def attach(r: Route, first: cmpb.AttachConsoleRequest,
           requests: Iterator[cmpb.AttachConsoleRequest],
           context: grpc.ServicerContext) -> Iterator[cmpb.AttachConsoleResponse]:
    refused: list[ServiceError] = []
    calls: list[StreamCall[nmpb.AttachVmConsoleResponse]] = []  # the call, once made

    def typed() -> Iterator[nmpb.AttachVmConsoleRequest]:
        # Consumed on gRPC's own thread: what the user types, until they stop.
        yield nmpb.AttachVmConsoleRequest(instance_id=r.instance_id, data=first.data)
        try:
            for req in requests:
                if req.data:
                    yield nmpb.AttachVmConsoleRequest(data=req.data)
        except grpc.RpcError:
            return  # the caller went away; the callback below ends the session
        except ServiceError as exc:  # a message that is no AttachConsoleRequest
            refused.append(exc)
            for c in calls:
                c.cancel()

    call = r.nm.attach_vm_console(typed())
    calls.append(call)
    if refused:
        call.cancel()
    context.add_callback(call.cancel)
    try:
        for resp in call:
            yield cmpb.AttachConsoleResponse(data=resp.data)
    except TashiError as exc:
        raise nm_failure(exc, r) from None
    finally:
        call.cancel()
    if refused:
        raise refused[0]
