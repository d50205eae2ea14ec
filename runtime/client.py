"""Typed client for the cluster manager, used by the CLI and by the other services.

Callers get protobuf resources back and `TashiError` (code + message) on
failure, never a raw `grpc.RpcError`.  The channel, timeouts and the error
translation are shared with the other clients in `tashi.runtime.rpc`; the
names re-exported here (`TashiError`, `channel`, `new_request_id`) keep the
old imports working.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc

from tashi.runtime import bulk
from tashi.runtime import data_port as dp
from tashi.runtime.malloc import keep_large_buffers
from tashi.runtime.names import as_host_state, as_instance_state
from tashi.runtime.rpc import RpcClient, StreamCall, TashiError, channel, new_request_id, translate
from tashi.runtime.tls import Tls
from tashi.v1 import cluster_manager_pb2 as cm
from tashi.v1 import cluster_manager_pb2_grpc as cm_grpc
from tashi.v1 import node_registry_pb2_grpc as reg_grpc
from tashi.v1 import placement_pb2 as pl
from tashi.v1 import placement_pb2_grpc as pl_grpc
from tashi.v1 import resources_pb2 as pb

__all__ = ["DEFAULT_CM", "MAX_PAGE", "ClusterClient", "TashiError", "channel", "host_ref",
           "instance_ref", "new_request_id"]

DEFAULT_CM = "127.0.0.1:9882"
MAX_PAGE = 5000
# Bytes per message of an upload (the cluster manager sends downloads in the same size).
IMAGE_CHUNK = 1 << 20
# Told (bytes done, bytes in all) as an upload or a download goes.
Progress = Callable[[int, int], None]


def instance_ref(instance: str | int) -> cm.InstanceRef:
    """A number names an instance id, anything else its name."""
    if isinstance(instance, int) or (isinstance(instance, str) and instance.isdigit()):
        return cm.InstanceRef(id=int(instance))
    return cm.InstanceRef(name=instance)


def host_ref(host: str | int) -> cm.HostRef:
    if isinstance(host, int) or (isinstance(host, str) and host.isdigit()):
        return cm.HostRef(id=int(host))
    return cm.HostRef(name=host)


class EventStream:
    """One WatchEvents call: iterate for lists of events (a filtered watch may
    yield empty ones); `seq` is how far the cluster manager has scanned, the
    point to resume from.  `cancel()` ends it promptly from any thread; the
    iteration then just stops."""

    def __init__(self, call: Any, since: int,
                 on_unavailable: Callable[[str], object] = lambda message: None) -> None:
        self._call = call
        self._cancelled = False
        self._on_unavailable = on_unavailable
        self.seq = since

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> list[pb.Event]:
        try:
            resp = next(self._call)
        except grpc.RpcError as exc:
            if self._cancelled or exc.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            err = translate(exc)
            if err.code == grpc.StatusCode.UNAVAILABLE:
                self._on_unavailable(err.message)  # the next watch goes elsewhere
            raise err from None
        events = list(resp.events)
        self.seq = max(self.seq, resp.seq, events[-1].seq if events else 0)
        return events

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    close = cancel

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class ClusterClient(RpcClient):
    """The cluster manager's three services behind one object."""

    service = "cluster manager"

    STUBS = {"cm": "tashi.v1.ClusterManagerService", "registry": "tashi.v1.NodeRegistryService",
             "placement": "tashi.v1.PlacementService"}

    def __init__(self, address: str = DEFAULT_CM, user: str = "root", timeout: float = 30.0,
                 tls: Tls | None = None, token: str = ""):
        """`address`: one cluster manager, or several separated by commas (one
        leads, the others stand by): calls follow the leader."""
        super().__init__(address, user, timeout, tls, token)

    def _connect(self, address: str) -> None:
        super()._connect(address)
        self.cm = cm_grpc.ClusterManagerServiceStub(self._channel)
        self.registry = reg_grpc.NodeRegistryServiceStub(self._channel)
        self.placement = pl_grpc.PlacementServiceStub(self._channel)

    def liveness_address(self, port: int) -> str:
        """The CM's liveness process (cm/beats.py): `port` of this CM's host."""
        return f"{self.address.rpartition(':')[0]}:{port}"

    # -- instances -----------------------------------------------------------
    def create_instances(self, spec: pb.Instance, count: int = 0,
                         request_id: str | None = None) -> list[pb.Instance]:
        req = cm.CreateInstanceRequest(request_id=request_id or new_request_id(),
                                       instance=spec, count=count)
        return list(self.call(self.cm.CreateInstance, req).instances)

    def get_instance(self, instance: str | int) -> pb.Instance:
        req = cm.GetInstanceRequest(instance=instance_ref(instance))
        return self.call(self.cm.GetInstance, req).instance

    def _all_pages(self, method: Any, field: str,
                   request: Callable[[str], Any]) -> tuple[list[Any], int, int]:
        """Every page of a List call, with the lowest and highest event sequence the
        pages answered (0 for lists without one): pages may answer at different
        points of history, so a watcher starts from the lowest."""
        items: list[Any] = []
        seqs: list[int] = []
        token = ""
        while True:
            resp = self.call(method, request(token))
            items.extend(getattr(resp, field))
            if "seq" in resp.DESCRIPTOR.fields_by_name:
                seqs.append(resp.seq)
            token = resp.next_page_token
            if not token:
                return items, min(seqs, default=0), max(seqs, default=0)

    def last_seq(self) -> int:
        """The sequence number of the CM's last event (one page of one instance
        answers it): watch from here to see what happens next."""
        return int(self.call(self.cm.ListInstances, cm.ListInstancesRequest(page_size=1)).seq)

    def list_instances_at(self, owner: str = "", states: list[int] | None = None,
                          host_id: int = 0, page_size: int = MAX_PAGE,
                          ) -> tuple[list[pb.Instance], int, int]:
        """All matching instances and the (lowest, highest) event seq of the listing."""
        wanted = [as_instance_state(s) for s in states or []]
        return self._all_pages(self.cm.ListInstances, "instances", lambda token: (
            cm.ListInstancesRequest(page_size=page_size, page_token=token, owner=owner,
                                    states=wanted, host_id=host_id)))

    def list_instances(self, owner: str = "", states: list[int] | None = None,
                       host_id: int = 0, page_size: int = MAX_PAGE) -> list[pb.Instance]:
        return self.list_instances_at(owner, states, host_id, page_size)[0]

    def instance_action(self, verb: str, instance: str | int,
                        request_id: str | None = None, **extra: Any) -> pb.Instance:
        """verb: Delete, Shutdown, Pause, Unpause, Suspend, Resume, Migrate."""
        request_cls = getattr(cm, f"{verb}InstanceRequest")
        req = request_cls(request_id=request_id or new_request_id(),
                          instance=instance_ref(instance), **extra)
        return self.call(getattr(self.cm, f"{verb}Instance"), req).instance

    def migrate_instance(self, instance: str | int, host: str | int) -> pb.Instance:
        return self.instance_action("Migrate", instance, target_host=host_ref(host))

    # -- hosts ---------------------------------------------------------------
    def create_host(self, name: str, notes: str = "") -> pb.Host:
        req = cm.CreateHostRequest(request_id=new_request_id(), name=name, notes=notes)
        return self.call(self.cm.CreateHost, req).host

    def delete_host(self, host: str | int) -> pb.Host:
        req = cm.DeleteHostRequest(request_id=new_request_id(), host=host_ref(host))
        return self.call(self.cm.DeleteHost, req).host

    def get_host(self, host: str | int) -> pb.Host:
        return self.call(self.cm.GetHost, cm.GetHostRequest(host=host_ref(host))).host

    def list_hosts_at(self) -> tuple[list[pb.Host], int, int]:
        """All hosts and the (lowest, highest) event seq of the listing."""
        return self._all_pages(self.cm.ListHosts, "hosts", lambda token: cm.ListHostsRequest(
            page_size=MAX_PAGE, page_token=token))

    def list_hosts(self) -> list[pb.Host]:
        return self.list_hosts_at()[0]

    def set_host_state(self, host: str | int, state: int) -> pb.Host:
        req = cm.SetHostStateRequest(request_id=new_request_id(), host=host_ref(host),
                                      state=as_host_state(state))
        return self.call(self.cm.SetHostState, req).host

    def set_host_notes(self, host: str | int, notes: str) -> pb.Host:
        req = cm.SetHostNotesRequest(request_id=new_request_id(), host=host_ref(host), notes=notes)
        return self.call(self.cm.SetHostNotes, req).host

    # -- reservations, users, networks, images --------------------------------
    def add_reservation(self, host: str | int, user: str) -> pb.Reservation:
        req = cm.AddReservationRequest(request_id=new_request_id(), host=host_ref(host), user=user)
        return self.call(self.cm.AddReservation, req).reservation

    def remove_reservation(self, host: str | int, user: str) -> pb.Reservation:
        req = cm.RemoveReservationRequest(request_id=new_request_id(), host=host_ref(host),
                                          user=user)
        return self.call(self.cm.RemoveReservation, req).reservation

    def get_reservation(self, host: str | int) -> pb.Reservation:
        req = cm.GetReservationRequest(host=host_ref(host))
        return self.call(self.cm.GetReservation, req).reservation

    def create_user(self, name: str) -> pb.User:
        req = cm.CreateUserRequest(request_id=new_request_id(), name=name)
        return self.call(self.cm.CreateUser, req).user

    def issue_token(self, user: str) -> cm.IssueTokenResponse:
        return self.call(self.cm.IssueToken, cm.IssueTokenRequest(user=user))

    def revoke_token(self, token_id: int) -> cm.TokenInfo:
        return self.call(self.cm.RevokeToken, cm.RevokeTokenRequest(
            id=token_id, request_id=new_request_id())).token

    def list_tokens(self, user: str = "") -> list[cm.TokenInfo]:
        return list(self.call(self.cm.ListTokens, cm.ListTokensRequest(user=user)).tokens)

    def list_users(self) -> list[pb.User]:
        return self._all_pages(self.cm.ListUsers, "users", lambda token: cm.ListUsersRequest(
            page_size=MAX_PAGE, page_token=token))[0]

    def create_network(self, network: pb.Network) -> pb.Network:
        req = cm.CreateNetworkRequest(request_id=new_request_id(), network=network)
        return self.call(self.cm.CreateNetwork, req).network

    def delete_network(self, network_id: int) -> pb.Network:
        req = cm.DeleteNetworkRequest(request_id=new_request_id(), network_id=network_id)
        return self.call(self.cm.DeleteNetwork, req).network

    def list_networks(self) -> list[pb.Network]:
        return self.list_networks_at()[0]

    def list_networks_at(self) -> tuple[list[pb.Network], int, int]:
        return self._all_pages(self.cm.ListNetworks, "networks", lambda token: (
            cm.ListNetworksRequest(page_size=MAX_PAGE, page_token=token)))

    def list_images(self) -> list[pb.Image]:
        return self._all_pages(self.cm.ListImages, "images", lambda token: cm.ListImagesRequest(
            page_size=MAX_PAGE, page_token=token))[0]

    def evacuate_host(self, host: str | int, parallel: int = 0) -> cm.EvacuateHostResponse:
        req = cm.EvacuateHostRequest(request_id=new_request_id(), host=host_ref(host),
                                     parallel=parallel)
        return self.call(self.cm.EvacuateHost, req)

    def add_image(self, name: str, owner: str = "") -> pb.Image:
        req = cm.AddImageRequest(request_id=new_request_id(), name=name, owner=owner)
        return self.call(self.cm.AddImage, req).image

    def copy_image(self, src: str, dst: str, request_id: str | None = None) -> pb.Image:
        """A full copy, made in the background: the answer shows it COPYING."""
        req = cm.CopyImageRequest(request_id=request_id or new_request_id(), src=src, dst=dst)
        return self.call(self.cm.CopyImage, req).image

    def clone_image(self, src: str, dst: str, request_id: str | None = None) -> pb.Image:
        req = cm.CloneImageRequest(request_id=request_id or new_request_id(), src=src, dst=dst)
        return self.call(self.cm.CloneImage, req).image

    def rebase_image(self, image: str, backing: str = "", request_id: str | None = None,
                     timeout: float | None = None) -> pb.Image:
        """Onto `backing` (same content), answered when done; without it, flatten
        in the background (the answer shows it COPYING)."""
        req = cm.RebaseImageRequest(request_id=request_id or new_request_id(), image=image,
                                    backing=backing)
        return self.call(self.cm.RebaseImage, req, timeout=timeout).image

    def delete_image(self, name: str, request_id: str | None = None) -> pb.Image:
        req = cm.DeleteImageRequest(request_id=request_id or new_request_id(), name=name)
        return self.call(self.cm.DeleteImage, req).image

    def _transfer_ticket(self, kind: int, name: str, size: int = 0
                         ) -> cm.OpenImageTransferResponse | None:
        """A data port ticket; None when this CM serves no data port (or predates it)."""
        try:
            return self.call(self.cm.OpenImageTransfer, cm.OpenImageTransferRequest(
                kind=kind, name=name, size_bytes=size))  # type: ignore[arg-type]
        except TashiError as exc:
            if exc.code == grpc.StatusCode.UNIMPLEMENTED or (
                    exc.code == grpc.StatusCode.FAILED_PRECONDITION
                    and "no data port" in exc.message):
                return None
            raise

    def _data_host(self) -> str:
        return self.address.rpartition(":")[0].strip("[]")

    def upload_image(self, path: str | os.PathLike[str], name: str = "",
                     progress: Progress | None = None, timeout: float | None = None,
                     data_port: bool = True) -> pb.Image:
        """Send the file at `path` as image `name` (default: the file's name); the
        cluster manager keeps it only once all of it arrived with its checksum.
        Through the CM's data port when it has one (runtime/data_port.py), else (or
        with data_port=False) the UploadImage stream.  No deadline unless
        `timeout` (an upload takes as long as its size)."""
        path = Path(path)
        if data_port:
            ticket = self._transfer_ticket(cm.IMAGE_TRANSFER_KIND_UPLOAD, name or path.name,
                                           os.path.getsize(path))
            if ticket is not None:
                return dp.upload(self._data_host(), ticket.port, ticket.ticket, path,
                                 self.tls, progress)
        keep_large_buffers()
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            f.seek(0)

            def requests() -> Iterator[cm.UploadImageRequest]:
                yield cm.UploadImageRequest(header=cm.UploadImageHeader(
                    name=name or path.name, size_bytes=size, sha256=digest))
                sent = 0
                while sent < size:
                    data = f.read(min(IMAGE_CHUNK, size - sent))
                    if not data:
                        return  # the file shrank: the cluster manager refuses the upload
                    sent += len(data)
                    yield cm.UploadImageRequest(chunk=data)
                    if progress is not None:
                        progress(sent, size)

            try:
                return self.cm.UploadImage(requests(), timeout=timeout,
                                           metadata=self._metadata).image
            except grpc.RpcError as exc:
                raise translate(exc) from None

    def download_image(self, name: str, path: str | os.PathLike[str],
                       progress: Progress | None = None, timeout: float | None = None,
                       data_port: bool = True) -> tuple[int, str]:
        """Image `name` into the file `path`, written under a hidden name beside it
        and renamed only once its size and checksum check out; (size, digest: "blake3:HEX"
        through the data port, else "sha256:HEX" through the DownloadImage stream)."""
        path = Path(path)
        if data_port:
            ticket = self._transfer_ticket(cm.IMAGE_TRANSFER_KIND_DOWNLOAD, name)
            if ticket is not None:
                return dp.download(self._data_host(), ticket.port, ticket.ticket, path,
                                   self.tls, progress)
        keep_large_buffers()
        with bulk.staged(path) as (fd, keep):
            call = self.cm.DownloadImage(cm.DownloadImageRequest(name=name), timeout=timeout,
                                         metadata=self._metadata)
            size, got, sent_digest = -1, 0, ""
            hasher = hashlib.sha256()
            with open(fd, "wb", closefd=False) as out:
                try:
                    for resp in call:
                        part = resp.WhichOneof("part")
                        if part == "size_bytes":
                            size = resp.size_bytes
                        elif part == "chunk":
                            data = resp.chunk  # each read of the field is a copy
                            out.write(data)
                            hasher.update(data)
                            got += len(data)
                            if progress is not None:
                                progress(got, size)
                        elif part == "sha256":
                            sent_digest = resp.sha256
                except grpc.RpcError as exc:
                    raise translate(exc) from None
            digest = hasher.hexdigest()
            if got != size or sent_digest != digest:
                raise TashiError(grpc.StatusCode.DATA_LOSS,
                                 f"image {name!r} arrived damaged ({got} of {size} bytes, "
                                 f"sha256 {digest[:12]}... against {sent_digest[:12] or 'none'}"
                                 "...); nothing was kept")
            keep()
        return size, f"sha256:{digest}"

    # -- events and placement -------------------------------------------------
    def watch_events(self, since: int, max_batch: int = 1000,
                     kinds: Iterable[int] = (), host: str | int | None = None,
                     timeout: float | None = None) -> EventStream:
        """Batches of events after `since`, optionally only of `kinds`
        (`cm.RESOURCE_KIND_*`) and only about `host`; a cancellable handle.
        Iterating raises TashiError(OUT_OF_RANGE) when `since` is older than
        the retained history, and TashiError(DEADLINE_EXCEEDED) after `timeout`."""
        req = cm.WatchEventsRequest(since=since, max_batch=max_batch,
                                    kinds=[cm.ResourceKind.ValueType(k) for k in kinds],
                                    host=host_ref(host) if host else None)
        call = self.cm.WatchEvents(req, metadata=self._metadata, timeout=timeout)
        return EventStream(call, since, self.switch)

    def activate(self, placements: list[pl.Placement],
                 request_id: str | None = None) -> pl.ActivateInstancesResponse:
        req = pl.ActivateInstancesRequest(request_id=request_id or new_request_id(),
                                          placements=placements)
        return self.call(self.placement.ActivateInstances, req)

    def hold(self, holds: list[pl.Hold], request_id: str | None = None) -> list[pb.Instance]:
        req = pl.HoldInstancesRequest(request_id=request_id or new_request_id(), holds=holds)
        return list(self.call(self.placement.HoldInstances, req).instances)

    # -- consoles (streams without a deadline: cancel them) --------------------------
    def read_console(self, instance: str | int, follow: bool = False,
                     tail_bytes: int = 0) -> ConsoleStream:
        """The instance's serial console as its host logged it (the last `tail_bytes`;
        0: all that is kept), then with `follow` what the guest writes, until the
        VM ends there or `cancel()`."""
        req = cm.ReadConsoleRequest(instance=instance_ref(instance), follow=follow,
                                    tail_bytes=tail_bytes)
        return ConsoleStream(self.cm.ReadConsole(req, metadata=self._metadata))

    def attach_console(self, instance: str | int, typed: Iterable[bytes]) -> ConsoleStream:
        """The serial port read-write: `typed` goes in (consumed on gRPC's own thread;
        when it ends, the output still flows), the guest's output comes out, until
        the VM ends or `cancel()`.  One session per instance at a time."""
        def requests() -> Iterator[cm.AttachConsoleRequest]:
            yield cm.AttachConsoleRequest(instance=instance_ref(instance))
            for data in typed:
                if data:
                    yield cm.AttachConsoleRequest(data=data)

        return ConsoleStream(self.cm.AttachConsole(requests(), metadata=self._metadata))


class LivenessClient(RpcClient):
    """The cluster manager's liveness process (cm/beats.py): heartbeats only."""

    service = "cluster manager's liveness process"
    STUBS = {"liveness": "tashi.v1.LivenessService"}

    def _connect(self, address: str) -> None:
        super()._connect(address)
        self.liveness = reg_grpc.LivenessServiceStub(self._channel)


class ConsoleStream:
    """A console call: iterate for the bytes of output; TashiError on failure.
    `cancel()` ends it promptly from any thread; the iteration then just stops."""

    def __init__(self, call: Any) -> None:
        self._stream: StreamCall[Any] = StreamCall(call)

    def __iter__(self) -> ConsoleStream:
        return self

    def __next__(self) -> bytes:
        return bytes(next(self._stream).data)

    def cancel(self) -> None:
        self._stream.cancel()

    close = cancel

    def __enter__(self) -> ConsoleStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()
