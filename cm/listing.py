"""ListInstances answered from each instance's serialized bytes.

Copying 20,000 protobuf messages into a response (`extend`) costs about ten
times what parsing their bytes does, and an instance's bytes change only when
the instance does (a change puts a new object in `Cluster.instances`; objects
are never edited in place).  So each instance is serialized once per change,
and a page is the concatenation of its instances' bytes, each framed as field
`instances` of ListInstancesResponse, parsed once into the answer.
"""

from __future__ import annotations

from tashi.cm import instances
from tashi.cm.cluster import Cluster
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb

_FIELD = cmpb.ListInstancesResponse.DESCRIPTOR.fields_by_name["instances"].number
_TAG = bytes([(_FIELD << 3) | 2])  # length-delimited; one byte for field numbers < 16


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class InstancePages:
    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster
        # instance id -> (the object its bytes were taken from, framed bytes)
        self._framed: dict[int, tuple[pb.Instance, bytes]] = {}

    def _frame(self, inst: pb.Instance) -> bytes:
        hit = self._framed.get(inst.id)
        if hit is not None and hit[0] is inst:
            return hit[1]
        body = inst.SerializeToString()
        framed = _TAG + _varint(len(body)) + body
        self._framed[inst.id] = (inst, framed)
        return framed

    def answer(self, who: str, page: list[pb.Instance], token: str, seq: int
               ) -> cmpb.ListInstancesResponse:
        """The page as `who` may see it (instances.view), with its token and seq."""
        parts: list[bytes] = []
        for inst in page:
            shown = instances.view(self.c, who, inst)
            if shown is inst:
                parts.append(self._frame(inst))
            else:  # another user's, or decayed: built for this answer only
                body = shown.SerializeToString()
                parts.append(_TAG + _varint(len(body)) + body)
        if len(self._framed) > 2 * len(self.c.instances) + 1024:
            live = self.c.instances
            self._framed = {i: f for i, f in self._framed.items() if live.get(i) is f[0]}
        resp = cmpb.ListInstancesResponse.FromString(b"".join(parts))
        resp.next_page_token, resp.seq = token, seq
        return resp
