"""Which events a filtered watch receives.

Whether an event is "about host H" is decided in `instance_hosts` (where an
instance sits) and `event_touches_host`; the hosts an instance event
concerns are stamped on the event (`Event.host_ids`) when it is committed,
from the instance before and after the change, so a watch filtered to a
host sees an instance leave it as well as arrive, from any `since`.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from tashi.cm.eventlog import HOST_SCOPED
from tashi.runtime.auth import NODE_PREFIX
from tashi.runtime.errors import denied, invalid
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb

KIND_FIELD = {
    cmpb.RESOURCE_KIND_HOST: "host",
    cmpb.RESOURCE_KIND_INSTANCE: "instance",
    cmpb.RESOURCE_KIND_NETWORK: "network",
    cmpb.RESOURCE_KIND_USER: "user",
}


def instance_hosts(inst: pb.Instance) -> set[int]:
    """Hosts an instance is on or charged to: its host, and a migration's target."""
    hosts = set(inst.status.charged_host_ids)
    if inst.status.host_id:
        hosts.add(inst.status.host_id)
    return hosts


def stamp_hosts(event: pb.Event, before: pb.Instance | None) -> None:
    """Record on `event` the hosts it concerns (`before`: the instance before the change)."""
    kind = event.WhichOneof("subject")
    if kind == "host":
        event.host_ids[:] = [event.host.id]
    elif kind == "instance":
        hosts = instance_hosts(event.instance)
        if before is not None:
            hosts |= instance_hosts(before)
        event.host_ids[:] = sorted(hosts)


def event_touches_host(event: pb.Event, host_id: int) -> bool:
    """Is this host or instance event about host `host_id`, before or after the change?"""
    if event.host_ids:
        return host_id in event.host_ids
    kind = event.WhichOneof("subject")  # events committed before host_ids existed
    if kind == "host":
        return event.host.id == host_id
    if kind == "instance":
        return host_id in instance_hosts(event.instance)
    return False


@dataclass
class WatchFilter:
    kinds: frozenset[str]  # empty: every kind
    host_id: int = 0
    host_name: str = ""  # named but not yet created: adopted from its HOST_CREATED

    @property
    def active(self) -> bool:
        return bool(self.kinds or self.host_id or self.host_name)

    def index_keys(self) -> list[tuple[Hashable, ...]] | None:
        """The event log index entries that hold exactly what passes, or None when
        the filter must look at each event (a host named before it exists)."""
        if self.host_name and not self.host_id:
            return None
        keys: list[tuple[Hashable, ...]] = []
        for kind in sorted(self.kinds or KIND_FIELD.values()):
            keys.append((kind, self.host_id) if self.host_id and kind in HOST_SCOPED
                        else (kind,))
        return keys

    def passes(self, event: pb.Event) -> bool:
        kind = event.WhichOneof("subject") or ""
        if self.kinds and kind not in self.kinds:
            return False
        if kind not in HOST_SCOPED or not (self.host_id or self.host_name):
            return True
        if not self.host_id:
            if kind == "host" and event.host.name == self.host_name:
                self.host_id = event.host.id
                return True
            return False
        return event_touches_host(event, self.host_id)


def watch_filter(req: cmpb.WatchEventsRequest, host_ids: dict[str, int]) -> WatchFilter:
    """The request's filter; `host_ids` resolves a host named by name (call under the lock)."""
    kinds = frozenset(KIND_FIELD[k] for k in req.kinds if k in KIND_FIELD)
    if any(k not in KIND_FIELD for k in req.kinds):
        raise invalid("kinds: name resource kinds, not RESOURCE_KIND_UNSPECIFIED")
    if not req.HasField("host"):
        return WatchFilter(kinds)
    which = req.host.WhichOneof("ref")
    if which == "id":
        return WatchFilter(kinds, host_id=req.host.id)
    if which == "name" and req.host.name:
        return WatchFilter(kinds, host_id=host_ids.get(req.host.name, 0),
                           host_name=req.host.name)
    raise invalid("host: name the host by id or name")


# What a node manager may watch: its own host and what runs there, and networks.
NODE_KINDS = frozenset({"host", "instance", "network"})


def own_host(host_ids: dict[str, int], who: str, flt: WatchFilter) -> None:
    """Narrow a node's watch to its own host (the one its certificate names)."""
    name = who.removeprefix(NODE_PREFIX)
    host_id = host_ids.get(name, 0)
    if (flt.host_id and flt.host_id != host_id) or (flt.host_name and flt.host_name != name):
        raise denied(f"node {name!r} may watch its own host only")
    if not host_id:
        raise denied(f"node {name!r} is not a host of this cluster")
    flt.host_id, flt.host_name = host_id, name
    flt.kinds = (flt.kinds or NODE_KINDS) & NODE_KINDS
