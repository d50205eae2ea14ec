"""gRPC handlers of the cluster manager: translate and delegate.

What they raise becomes a status in the shared error interceptor
(`tashi.runtime.interceptors`), which `runtime.server.start` installs."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from tashi.cm import admin, consoles, instances, nodes, placement, tokens
from tashi.cm import images as catalogue
from tashi.cm.cluster import Cluster
from tashi.cm.config import CMConfig
from tashi.cm.evacuate import Evacuations
from tashi.cm.eventlog import OutOfRange
from tashi.cm.image_jobs import ImageJobs
from tashi.cm.image_transfer import Transfers
from tashi.cm.listing import InstancePages
from tashi.cm.slots import Slots
from tashi.cm.watch import own_host, watch_filter
from tashi.runtime.auth import NODE_PREFIX, caller_name, principal
from tashi.runtime.errors import invalid, out_of_range
from tashi.runtime.nm_client import NodeManagerClients
from tashi.runtime.tls import Tls
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import cluster_manager_pb2_grpc as cm_grpc
from tashi.v1 import node_registry_pb2 as nr
from tashi.v1 import node_registry_pb2_grpc as nr_grpc
from tashi.v1 import placement_pb2 as plpb
from tashi.v1 import placement_pb2_grpc as pl_grpc

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 1.0  # a filtered watch hears of skipped events at least this often


# Server threads kept for heartbeats (and for answering refusals) beyond what
# admitted calls may hold: no burst of other calls delays a beat past its host's
# expiry, which would orphan its VMs and bring a re-registration on top.
HEARTBEAT_THREADS = 8
# Not admitted through `calls`: heartbeats (never refused, never wait for the
# lock) and transfers (bounded by their own slots, for as long as they last).
UNADMITTED = frozenset({"Heartbeat", "UploadImage", "DownloadImage"})
CALLS = "calls"


class Admitted:
    """A servicer whose calls are admitted through `calls` (see `handler`)."""

    calls: Slots

    def caller_key(self, who: str, request: Any) -> str:
        """Whose share of `calls` a call takes."""
        return who


def call_slots(cfg: CMConfig) -> Slots:
    """The unary calls served at once (most wait for the cluster's lock; each holds
    a server thread while it does): the threads no watch may take, less those kept
    for heartbeats; a third of them per caller, so one caller's burst leaves the
    others room.  A refused call did nothing and is sent again (RpcClient.call)."""
    total = max(1, cfg.watch_reserve - HEARTBEAT_THREADS)
    return Slots(total, max(1, total // 3), "calls at once", retry_after=0.02)


def handler(fn: Callable[[Any, Any, Any, str], Any]) -> Callable[[Any, Any, Any], Any]:
    """Hand the caller's name to the handler as `who`, once the call is admitted
    (`self.calls`)."""
    admit = fn.__name__ not in UNADMITTED

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        who = caller_name(context)
        if not admit:
            return fn(self, request, context, who)
        key = self.caller_key(who, request)
        self.calls.take(key, CALLS)
        try:
            return fn(self, request, context, who)
        finally:
            self.calls.give(key, CALLS)

    return wrapper


WATCHES = "watches"
CONSOLES = "console streams"


class ClusterManagerServicer(Admitted, cm_grpc.ClusterManagerServiceServicer):
    def __init__(self, cluster: Cluster, evacuations: Evacuations | None = None,
                 nms: NodeManagerClients | None = None, calls: Slots | None = None) -> None:
        """`calls`: shared with the other services (call_slots)."""
        self.c = cluster
        self.calls = calls or call_slots(cluster.cfg)
        self.evacuations = evacuations or Evacuations(cluster)
        cfg = cluster.cfg
        self.watches = Slots(cfg.workers - cfg.watch_reserve, cfg.watches_per_caller,
                             "watches and console streams")
        self.image_ops = ImageJobs(cluster)
        self.transfers = Transfers(self.image_ops)
        self.pages = InstancePages(cluster)
        # Node managers, for the consoles (the dispatcher's clients, when given).
        self.nms = nms or NodeManagerClients(
            user=cfg.admins[0] if cfg.admins else "root", timeout=cfg.nm_call_seconds,
            tls=Tls.from_settings(cfg))

    @handler
    def CreateInstance(self, req: cmpb.CreateInstanceRequest, ctx: Any, who: str) -> Any:
        return instances.create(self.c, who, req)

    @handler
    def GetInstance(self, req: cmpb.GetInstanceRequest, ctx: Any, who: str) -> Any:
        with self.c.lock:
            self.c.user(who)
            return cmpb.GetInstanceResponse(
                instance=instances.view(self.c, who, self.c.find_instance(req.instance)))

    @handler
    def ListInstances(self, req: cmpb.ListInstancesRequest, ctx: Any, who: str) -> Any:
        c = self.c
        with c.lock:
            c.user(who)
            page, token = self.pages.select(req)  # immutable: safe to read without the lock
            seq = c.events.last_seq
        # Making the answer is the costly part: done outside the lock, so writers
        # (creates, reports) never wait for readers.
        return self.pages.answer(who, page, token, seq)

    @handler
    def DeleteInstance(self, req: cmpb.DeleteInstanceRequest, ctx: Any, who: str) -> Any:
        return instances.destroy(self.c, who, req)

    def _act(self, action: str, req: Any, who: str, resp_cls: type,
             target: cmpb.HostRef | None = None) -> Any:
        return instances.act(self.c, who, action, req.request_id, req.instance, resp_cls, target)

    @handler
    def ShutdownInstance(self, req: Any, ctx: Any, who: str) -> Any:
        return self._act("shutdown", req, who, cmpb.ShutdownInstanceResponse)

    @handler
    def PauseInstance(self, req: Any, ctx: Any, who: str) -> Any:
        return self._act("pause", req, who, cmpb.PauseInstanceResponse)

    @handler
    def UnpauseInstance(self, req: Any, ctx: Any, who: str) -> Any:
        return self._act("unpause", req, who, cmpb.UnpauseInstanceResponse)

    @handler
    def SuspendInstance(self, req: Any, ctx: Any, who: str) -> Any:
        return self._act("suspend", req, who, cmpb.SuspendInstanceResponse)

    @handler
    def ResumeInstance(self, req: Any, ctx: Any, who: str) -> Any:
        return self._act("resume", req, who, cmpb.ResumeInstanceResponse)

    @handler
    def MigrateInstance(self, req: cmpb.MigrateInstanceRequest, ctx: Any, who: str) -> Any:
        if not req.HasField("target_host"):
            raise invalid("name the host to migrate to")
        return self._act("migrate", req, who, cmpb.MigrateInstanceResponse, req.target_host)

    @handler
    def CreateHost(self, req: cmpb.CreateHostRequest, ctx: Any, who: str) -> Any:
        return admin.create_host(self.c, who, req)

    @handler
    def DeleteHost(self, req: cmpb.DeleteHostRequest, ctx: Any, who: str) -> Any:
        return admin.delete_host(self.c, who, req)

    @handler
    def GetHost(self, req: cmpb.GetHostRequest, ctx: Any, who: str) -> Any:
        with self.c.lock:
            self.c.user(who)
            return cmpb.GetHostResponse(host=self.c.host_view(self.c.find_host(req.host)))

    @handler
    def ListHosts(self, req: cmpb.ListHostsRequest, ctx: Any, who: str) -> Any:
        c = self.c
        with c.lock:
            c.user(who)
            chosen, token = c.page(c.hosts, req.page_size, req.page_token)
            resp = cmpb.ListHostsResponse(next_page_token=token, seq=c.events.last_seq)
            resp.hosts.extend(c.host_view(c.hosts[i]) for i in chosen)
            return resp

    @handler
    def SetHostState(self, req: cmpb.SetHostStateRequest, ctx: Any, who: str) -> Any:
        return admin.set_host_state(self.c, who, req)

    @handler
    def EvacuateHost(self, req: cmpb.EvacuateHostRequest, ctx: Any, who: str) -> Any:
        return self.evacuations.request(who, req)

    @handler
    def SetHostNotes(self, req: cmpb.SetHostNotesRequest, ctx: Any, who: str) -> Any:
        return admin.set_host_notes(self.c, who, req)

    @handler
    def AddReservation(self, req: cmpb.AddReservationRequest, ctx: Any, who: str) -> Any:
        return admin.add_reservation(self.c, who, req)

    @handler
    def RemoveReservation(self, req: cmpb.RemoveReservationRequest, ctx: Any, who: str) -> Any:
        return admin.remove_reservation(self.c, who, req)

    @handler
    def GetReservation(self, req: cmpb.GetReservationRequest, ctx: Any, who: str) -> Any:
        return admin.get_reservation(self.c, who, req)

    @handler
    def CreateUser(self, req: cmpb.CreateUserRequest, ctx: Any, who: str) -> Any:
        return admin.create_user(self.c, who, req)

    @handler
    def ListUsers(self, req: cmpb.ListUsersRequest, ctx: Any, who: str) -> Any:
        c = self.c
        with c.lock:
            c.user(who)
            chosen, token = c.page(c.users, req.page_size, req.page_token)
            return cmpb.ListUsersResponse(
                users=[admin.user_view(c, c.users[i]) for i in chosen], next_page_token=token)

    @handler
    def IssueToken(self, req: cmpb.IssueTokenRequest, ctx: Any, who: str) -> Any:
        return tokens.issue(self.c, who, req)

    @handler
    def RevokeToken(self, req: cmpb.RevokeTokenRequest, ctx: Any, who: str) -> Any:
        return tokens.revoke(self.c, who, req)

    @handler
    def ListTokens(self, req: cmpb.ListTokensRequest, ctx: Any, who: str) -> Any:
        return tokens.listing(self.c, who, req)

    @handler
    def CreateNetwork(self, req: cmpb.CreateNetworkRequest, ctx: Any, who: str) -> Any:
        return admin.create_network(self.c, who, req)

    @handler
    def DeleteNetwork(self, req: cmpb.DeleteNetworkRequest, ctx: Any, who: str) -> Any:
        return admin.delete_network(self.c, who, req)

    @handler
    def ListNetworks(self, req: cmpb.ListNetworksRequest, ctx: Any, who: str) -> Any:
        c = self.c
        with c.lock:
            c.user(who)
            chosen, token = c.page(c.networks, req.page_size, req.page_token)
            return cmpb.ListNetworksResponse(networks=[c.networks[i] for i in chosen],
                                             next_page_token=token, seq=c.events.last_seq)

    @handler
    def ListImages(self, req: cmpb.ListImagesRequest, ctx: Any, who: str) -> Any:
        with self.c.lock:
            self.c.user(who)
        images = catalogue.list_images(self.c)
        start = int(req.page_token) if req.page_token.isdigit() else 0
        size = req.page_size or 1000
        page = images[start:start + size]
        token = str(start + size) if start + size < len(images) else ""
        return cmpb.ListImagesResponse(images=page, next_page_token=token)

    @handler
    def AddImage(self, req: cmpb.AddImageRequest, ctx: Any, who: str) -> Any:
        return catalogue.add(self.c, who, req)

    @handler
    def CopyImage(self, req: cmpb.CopyImageRequest, ctx: Any, who: str) -> Any:
        return self.image_ops.copy(who, req)

    @handler
    def CloneImage(self, req: cmpb.CloneImageRequest, ctx: Any, who: str) -> Any:
        return self.image_ops.clone(who, req)

    @handler
    def RebaseImage(self, req: cmpb.RebaseImageRequest, ctx: Any, who: str) -> Any:
        return self.image_ops.rebase(who, req)

    @handler
    def DeleteImage(self, req: cmpb.DeleteImageRequest, ctx: Any, who: str) -> Any:
        return self.image_ops.delete(who, req)

    @handler
    def UploadImage(self, requests: Iterator[cmpb.UploadImageRequest], ctx: Any,
                    who: str) -> Any:
        return self.transfers.upload(who, requests)

    @handler
    def DownloadImage(self, req: cmpb.DownloadImageRequest, ctx: Any, who: str) -> Any:
        return self.transfers.download(who, req)

    @handler
    def OpenImageTransfer(self, req: cmpb.OpenImageTransferRequest, ctx: Any,
                          who: str) -> Any:
        return self.transfers.open(who, req)

    def WatchEvents(self, req: cmpb.WatchEventsRequest,
                    context: grpc.ServicerContext) -> Iterator[cmpb.WatchEventsResponse]:
        """Replay then tail.  A filtered watch still advances `seq` past the events
        it skips: with the next match, or on its own at most every PROGRESS_SECONDS
        (and when the log goes quiet), so a reconnect never scans far back."""
        who = caller_name(context)
        log_ = self.c.events
        with self.c.lock:
            flt = watch_filter(req, self.c.host_ids)
            if who.startswith(NODE_PREFIX):
                own_host(self.c.host_ids, who, flt)
            else:
                self.c.require_admin(who, "watch the event stream")
        try:
            log_.check_since(req.since)
        except OutOfRange as exc:
            raise out_of_range(str(exc)) from None
        since = sent = req.since
        sent_at = time.monotonic()
        limit = req.max_batch if 0 < req.max_batch <= 10_000 else 1000
        self.watches.take(who, WATCHES)
        log_.watchers += 1
        try:
            while context.is_active() and not log_.closed:
                keys = flt.index_keys() if flt.active else None
                try:
                    if keys is not None:
                        chosen, read_to = log_.read_matching(since, limit, 1.0, keys, flt.passes)
                    else:
                        chosen = log_.read_after(since, limit, timeout=1.0)
                        read_to = chosen[-1].seq if chosen else since
                        if flt.active:
                            chosen = [e for e in chosen if flt.passes(e)]
                except OutOfRange as exc:
                    raise out_of_range(str(exc)) from None
                quiet = read_to == since  # a whole wait went by with nothing new
                since = read_to
                if not chosen and (since == sent or (
                        not quiet and time.monotonic() - sent_at < PROGRESS_SECONDS)):
                    continue
                sent, sent_at = since, time.monotonic()
                yield cmpb.WatchEventsResponse(events=chosen, seq=since)
        finally:
            log_.watchers -= 1
            self.watches.give(who, WATCHES)

    # -- consoles: checked here, proxied to the instance's node manager (consoles.py) ----
    def ReadConsole(self, req: cmpb.ReadConsoleRequest,
                    context: grpc.ServicerContext) -> Iterator[cmpb.ReadConsoleResponse]:
        who = caller_name(context)
        consoles.check_read(req)
        target = consoles.route(self.c, self.nms, who, req.instance)
        self.watches.take(who, CONSOLES)
        try:
            yield from consoles.read(target, req, context)
        finally:
            self.watches.give(who, CONSOLES)

    def AttachConsole(self, requests: Iterator[cmpb.AttachConsoleRequest],
                      context: grpc.ServicerContext) -> Iterator[cmpb.AttachConsoleResponse]:
        who = caller_name(context)
        self.watches.take(who, CONSOLES)  # before waiting for the first message
        try:
            first = consoles.first_message(requests)
            if first is None:
                return
            target = consoles.route(self.c, self.nms, who, first.instance)
            yield from consoles.attach(target, first, requests, context)
        finally:
            self.watches.give(who, CONSOLES)


class NodeRegistryServicer(Admitted, nr_grpc.NodeRegistryServiceServicer):
    def __init__(self, cluster: Cluster, calls: Slots | None = None) -> None:
        """Registrations and reports wait for the cluster's lock holding a server
        thread: admitted through `calls` (call_slots), so that a burst (a thousand
        hosts reporting their starts, or registering again) never takes the
        threads heartbeats need."""
        self.c = cluster
        self.calls = calls or call_slots(cluster.cfg)

    def caller_key(self, who: str, request: Any) -> str:
        """A node's own share; an admin speaking for hosts (tools, a fleet of node
        managers without certificates, all "root") a share per host it names."""
        return who if who.startswith(NODE_PREFIX) else f"{who} for {request.name}"

    @handler
    def RegisterHost(self, req: nr.RegisterHostRequest, ctx: Any, who: str) -> Any:
        return nodes.register(self.c, who, req, fingerprint=principal(ctx).fingerprint,
                              wanted=ctx.is_active)

    @handler
    def Heartbeat(self, req: nr.HeartbeatRequest, ctx: Any, who: str) -> Any:
        return nodes.heartbeat(self.c, who, req)

    @handler
    def ReportInstances(self, req: nr.ReportInstancesRequest, ctx: Any, who: str) -> Any:
        return nodes.report(self.c, who, req, wanted=ctx.is_active)


class PlacementServicer(Admitted, pl_grpc.PlacementServiceServicer):
    def __init__(self, cluster: Cluster, calls: Slots | None = None) -> None:
        self.c = cluster
        self.calls = calls or call_slots(cluster.cfg)

    @handler
    def ActivateInstances(self, req: plpb.ActivateInstancesRequest, ctx: Any, who: str) -> Any:
        return placement.activate(self.c, who, req)

    @handler
    def HoldInstances(self, req: plpb.HoldInstancesRequest, ctx: Any, who: str) -> Any:
        return placement.hold(self.c, who, req)
