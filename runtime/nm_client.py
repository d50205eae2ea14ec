"""Typed client of a node manager's NodeManagerService (the cluster manager's side).

One method per RPC, named after it (`StartVm` -> `start_vm`): each takes the
request message and returns the response message, or raises `TashiError`
whose `.code` is the status the node manager answered (NOT_FOUND for a VM it
does not manage, ...) or the transport's (UNAVAILABLE, DEADLINE_EXCEEDED).
`NodeManagerClients` keeps one client per node manager address.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import grpc
from google.protobuf.message import Message

from tashi.runtime.rpc import RpcClient, StreamCall, TashiError
from tashi.runtime.tls import Tls
from tashi.v1 import node_manager_pb2 as nm
from tashi.v1 import node_manager_pb2_grpc as nm_grpc

#: the calls that take only an instance id, by the verb the CM's dispatcher uses
SIMPLE_ACTIONS = ("shutdown", "destroy", "pause", "unpause", "suspend")
#: most starts one StartVms call carries (node managers refuse more)
MAX_STARTS = 256
_CODES = {c.value[0]: c for c in grpc.StatusCode}


class NodeManagerClient(RpcClient):
    service = "node manager"

    def __init__(self, address: str, user: str = "root", timeout: float = 30.0,
                 tls: Tls | None = None) -> None:
        super().__init__(address, user, timeout, tls)
        self.stub = nm_grpc.NodeManagerServiceStub(self._channel)

    # -- lifecycle ----------------------------------------------------------------
    def start_vm(self, request: nm.StartVmRequest) -> nm.StartVmResponse:
        return self.call(self.stub.StartVm, request)

    def start_vms(self, requests: list[nm.StartVmRequest]
                  ) -> list[nm.VmInfo | TashiError]:
        """Several starts in one call (at most MAX_STARTS): for each, in order, the
        VM or the error StartVm would have raised.  A node manager without
        StartVms (an older version) is asked one StartVm at a time instead."""
        try:
            resp = self.call(self.stub.StartVms, nm.StartVmsRequest(starts=requests))
        except TashiError as exc:
            if exc.code != grpc.StatusCode.UNIMPLEMENTED:
                raise
            return [self._one_start(r) for r in requests]
        if len(resp.results) != len(requests):
            raise TashiError(grpc.StatusCode.INTERNAL, f"node manager at {self.address} "
                             f"answered {len(resp.results)} of {len(requests)} starts")
        return [r.vm if r.code == 0 else TashiError(
            _CODES.get(r.code, grpc.StatusCode.UNKNOWN), r.message) for r in resp.results]

    def _one_start(self, request: nm.StartVmRequest) -> nm.VmInfo | TashiError:
        try:
            return self.start_vm(request).vm
        except TashiError as exc:
            return exc

    def resume_vm(self, request: nm.ResumeVmRequest) -> nm.ResumeVmResponse:
        return self.call(self.stub.ResumeVm, request)

    def shutdown_vm(self, request: nm.ShutdownVmRequest) -> nm.ShutdownVmResponse:
        return self.call(self.stub.ShutdownVm, request)

    def destroy_vm(self, request: nm.DestroyVmRequest) -> nm.DestroyVmResponse:
        return self.call(self.stub.DestroyVm, request)

    def pause_vm(self, request: nm.PauseVmRequest) -> nm.PauseVmResponse:
        return self.call(self.stub.PauseVm, request)

    def unpause_vm(self, request: nm.UnpauseVmRequest) -> nm.UnpauseVmResponse:
        return self.call(self.stub.UnpauseVm, request)

    def suspend_vm(self, request: nm.SuspendVmRequest) -> nm.SuspendVmResponse:
        return self.call(self.stub.SuspendVm, request)

    def simple_action(self, action: str, instance_id: int, request_id: str) -> Message:
        """One of SIMPLE_ACTIONS on `instance_id`; its response (SuspendVmResponse
        carries `suspend_file`, the others `vm`)."""
        calls: dict[str, tuple[type[Message], Callable[..., Message]]] = {
            "shutdown": (nm.ShutdownVmRequest, self.shutdown_vm),
            "destroy": (nm.DestroyVmRequest, self.destroy_vm),
            "pause": (nm.PauseVmRequest, self.pause_vm),
            "unpause": (nm.UnpauseVmRequest, self.unpause_vm),
            "suspend": (nm.SuspendVmRequest, self.suspend_vm),
        }
        if action not in calls:
            raise ValueError(f"{action!r} is none of {', '.join(SIMPLE_ACTIONS)}")
        request_cls, method = calls[action]
        return method(request_cls(request_id=request_id, instance_id=instance_id))

    # -- live migration, Tashi's four steps -----------------------------------------
    def prepare_receive_vm(self, request: nm.PrepareReceiveVmRequest
                           ) -> nm.PrepareReceiveVmResponse:
        return self.call(self.stub.PrepareReceiveVm, request)

    def prepare_source_vm(self, request: nm.PrepareSourceVmRequest
                          ) -> nm.PrepareSourceVmResponse:
        return self.call(self.stub.PrepareSourceVm, request)

    def send_vm(self, request: nm.SendVmRequest, timeout: float | None = None
                ) -> nm.SendVmResponse:
        """The whole migration runs in this call: give it a migration's time."""
        return self.call(self.stub.SendVm, request, timeout)

    def receive_vm(self, request: nm.ReceiveVmRequest) -> nm.ReceiveVmResponse:
        return self.call(self.stub.ReceiveVm, request)

    def cancel_receive_vm(self, request: nm.CancelReceiveVmRequest
                          ) -> nm.CancelReceiveVmResponse:
        return self.call(self.stub.CancelReceiveVm, request)

    # -- reading ----------------------------------------------------------------------
    def get_vm(self, instance_id: int) -> nm.VmInfo:
        return self.call(self.stub.GetVm, nm.GetVmRequest(instance_id=instance_id)).vm

    def get_vm_stats(self, instance_id: int) -> nm.VmStats:
        resp = self.call(self.stub.GetVmStats, nm.GetVmStatsRequest(instance_id=instance_id))
        return resp.stats

    def list_vms(self, page_size: int = 0) -> Iterator[nm.VmInfo]:
        """Every VM the node manager runs, page after page."""
        request = nm.ListVmsRequest(page_size=page_size)
        while True:
            resp = self.call(self.stub.ListVms, request)
            yield from resp.vms
            if not resp.next_page_token:
                return
            request.page_token = resp.next_page_token

    # -- the serial console (streams: no deadline, cancel them) ------------------------
    def read_vm_console(self, request: nm.ReadVmConsoleRequest
                        ) -> StreamCall[nm.ReadVmConsoleResponse]:
        return StreamCall(self.stub.ReadVmConsole(request, metadata=self._metadata))

    def attach_vm_console(self, requests: Iterator[nm.AttachVmConsoleRequest]
                          ) -> StreamCall[nm.AttachVmConsoleResponse]:
        """`requests` is consumed on gRPC's own thread; its first message names the VM."""
        return StreamCall(self.stub.AttachVmConsole(requests, metadata=self._metadata))


class NodeManagerClients:
    """One NodeManagerClient per address, made on first use; all closed together."""

    def __init__(self, user: str = "root", timeout: float = 30.0,
                 tls: Tls | None = None) -> None:
        self.user = user
        self.timeout = timeout
        self.tls = tls
        self._clients: dict[str, NodeManagerClient] = {}
        self._lock = threading.Lock()

    def get(self, address: str) -> NodeManagerClient:
        with self._lock:
            client = self._clients.get(address)
            if client is None:
                client = self._clients[address] = NodeManagerClient(
                    address, self.user, self.timeout, self.tls)
            return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
