"""What one change is: a `Txn` of staged objects and events, checked against the
instance lifecycle as it is staged; `move` is the one way to change an
instance's state.  The cluster (cm/cluster.py) stores and applies them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import Message

from tashi.cm import lifecycle
from tashi.cm.watch import stamp_hosts
from tashi.v1 import resources_pb2 as pb

R = TypeVar("R", bound=Message)

KIND_OF = {pb.Host: "host", pb.Instance: "instance", pb.Network: "network", pb.User: "user"}


def copy_of(msg: R) -> R:
    new = type(msg)()
    new.CopyFrom(msg)
    return new


def move(txn: Txn, inst: pb.Instance, state: pb.InstanceState, message: str,
         reason: str = "", edit: Callable[[pb.InstanceStatus], None] | None = None,
         ) -> pb.Instance:
    """Stage `inst` in `state` (the event says `message`, the status `reason`):
    the one way the CM changes an instance's status.  `edit` changes other
    status fields in the same step; `Txn.put` checks the move and settles
    what follows from the state."""
    new = copy_of(inst)
    new.status.state = state
    new.status.reason = reason
    if edit is not None:
        edit(new.status)
    new.update_time.GetCurrentTime()
    txn.put(new, pb.EVENT_TYPE_INSTANCE_UPDATED, message)
    return new


@dataclass
class Usage:
    cores: int = 0
    memory_mib: int = 0
    count: int = 0


@dataclass
class Txn:
    """The changes one request stages; committed together or not at all.

    Every instance written through it is checked against the transition
    table (an illegal move raises before anything is stored) and has the
    status fields that follow from its state settled."""

    actor: str
    # The committed instances, for the transition check.
    current: dict[int, pb.Instance] = field(default_factory=dict)
    changes: list[tuple[str, int, Message | None]] = field(default_factory=list)
    events: list[pb.Event] = field(default_factory=list)
    after: list[Callable[[], None]] = field(default_factory=list)
    meta: dict[str, int] = field(default_factory=dict)
    staged: dict[tuple[str, int], Message | None] = field(default_factory=dict)

    def instance(self, iid: int) -> pb.Instance | None:
        """The instance as this transaction left it so far."""
        staged = self.staged.get(("instance", iid), False)
        if staged is not False:
            return staged  # type: ignore[return-value]
        return self.current.get(iid)

    def put(self, obj: Message, etype: pb.EventType, message: str = "") -> None:
        self._stage(obj, obj, etype, message)

    def delete(self, obj: Message, etype: pb.EventType, message: str = "") -> None:
        self._stage(obj, None, etype, message)

    def put_quiet(self, kind: str, oid: int, obj: Message) -> None:
        """Store a resource no event may carry (a token's hash)."""
        self.changes.append((kind, oid, obj))
        self.staged[(kind, oid)] = obj

    def delete_quiet(self, kind: str, oid: int) -> None:
        """Drop a resource no event carries (an image's catalogue record)."""
        self.changes.append((kind, oid, None))
        self.staged[(kind, oid)] = None

    def _stage(self, obj: Message, after: Message | None, etype: pb.EventType,
               message: str) -> None:
        kind = KIND_OF[type(obj)]
        oid = obj.id  # type: ignore[attr-defined]
        before = self.instance(oid) if isinstance(obj, pb.Instance) else None
        if isinstance(obj, pb.Instance):
            if after is None:
                if before is not None:
                    lifecycle.check(before.status.state, pb.INSTANCE_STATE_EXITED, oid)
            else:
                lifecycle.check(before.status.state if before is not None else None,
                                obj.status.state, oid)
                lifecycle.settle(obj.status)
        self.changes.append((kind, oid, after))
        self.staged[(kind, oid)] = after
        event = pb.Event(type=etype, actor=self.actor, message=message,
                         **{kind: obj})  # type: ignore[arg-type]
        stamp_hosts(event, before)
        self.events.append(event)
