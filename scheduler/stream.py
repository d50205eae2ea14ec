"""What the agent reads from the cluster manager: a full listing, then the event stream.

`EventWatch` runs `WatchEvents` on its own thread and hands batches to the
agent's queue, tagged with its generation so that batches of a stream the
agent has since replaced are ignored.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any

import grpc

from tashi.runtime.auth import user_metadata
from tashi.runtime.client import ClusterClient, TashiError
from tashi.v1 import cluster_manager_pb2 as cm
from tashi.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)


@dataclass
class Listing:
    hosts: list[pb.Host]
    instances: list[pb.Instance]
    networks: list[pb.Network]
    # Pages may answer at different points of history: watch from the oldest
    # and trust the view only once it has caught up with the newest.
    seq_min: int
    seq_max: int


def list_all(client: ClusterClient) -> Listing:
    hosts, hlo, hhi = client.list_hosts_at()
    instances, ilo, ihi = client.list_instances_at()
    networks = client.list_networks()
    return Listing(hosts, instances, networks, min(hlo, ilo), max(hhi, ihi))


@dataclass(frozen=True)
class Item:
    """One thing from a watch: a batch of events, or why the stream ended."""

    generation: int
    events: list[pb.Event] | None = None
    error: TashiError | None = None


class EventWatch(threading.Thread):
    def __init__(self, client: ClusterClient, since: int, out: queue.Queue[Item | None],
                 generation: int, max_batch: int = 1000) -> None:
        super().__init__(name=f"watch-{generation}", daemon=True)
        self.generation = generation
        self._out = out
        self._cancelled = threading.Event()
        request = cm.WatchEventsRequest(since=since, max_batch=max_batch)
        self._stream: Any = client.cm.WatchEvents(request, metadata=user_metadata(client.user))

    def run(self) -> None:
        try:
            for resp in self._stream:
                self._out.put(Item(self.generation, events=list(resp.events)))
            error = TashiError(grpc.StatusCode.UNAVAILABLE, "event stream ended")
        except grpc.RpcError as exc:
            if self._cancelled.is_set():
                return
            error = TashiError(exc.code(), exc.details() or "")
        if not self._cancelled.is_set():
            self._out.put(Item(self.generation, error=error))

    def cancel(self) -> None:
        self._cancelled.set()
        self._stream.cancel()
