"""NodeManagerService: translates protobuf to driver calls.

The driver's `NmError`s are `ServiceError`s: the shared error interceptor
answers their status (see `tashi.runtime.interceptors`)."""

from __future__ import annotations

import logging
from typing import Any

from tashi.nm.convert import spec_from_instance, vm_info_pb, vm_stats_pb
from tashi.nm.driver import Driver
from tashi.nm.errors import InvalidArgument
from tashi.nm.model import MigrationPaths, VmSpec
from tashi.nm.plumbing import BridgeLookup, bridges_for
from tashi.v1 import node_manager_pb2 as nm
from tashi.v1 import node_manager_pb2_grpc as nm_grpc
from tashi.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

MAX_PAGE = 1000


def _instance_id(value: int) -> int:
    if value <= 0:
        raise InvalidArgument("instance_id must be positive")
    return value


class NodeManagerServicer(nm_grpc.NodeManagerServiceServicer):
    def __init__(self, driver: Driver, bridge_lookup: BridgeLookup | None = None) -> None:
        self.driver = driver
        self.bridge_lookup = bridge_lookup

    def _spec(self, inst: pb.Instance, networks: Any) -> VmSpec:
        if inst.id <= 0:
            raise InvalidArgument("instance.id must be positive")
        asked, in_effect = len(inst.spec.nics), len(inst.status.nics)
        if asked != in_effect:
            raise InvalidArgument(f"instance {inst.id} asks for {asked} NICs but its status "
                                  f"has {in_effect} in effect; the NICs in effect are needed, "
                                  "one per NIC asked")
        bridges = bridges_for(networks, [n.network_id for n in inst.status.nics],
                              self.bridge_lookup)
        return spec_from_instance(inst, bridges)

    def StartVm(self, request: nm.StartVmRequest, context: Any) -> nm.StartVmResponse:
        vm = self.driver.start_vm(self._spec(request.instance, request.networks))
        return nm.StartVmResponse(vm=vm_info_pb(vm))

    def ShutdownVm(self, request: nm.ShutdownVmRequest, context: Any) -> nm.ShutdownVmResponse:
        vm = self.driver.shutdown_vm(_instance_id(request.instance_id))
        return nm.ShutdownVmResponse(vm=vm_info_pb(vm))

    def DestroyVm(self, request: nm.DestroyVmRequest, context: Any) -> nm.DestroyVmResponse:
        vm = self.driver.destroy_vm(_instance_id(request.instance_id))
        return nm.DestroyVmResponse(vm=vm_info_pb(vm))

    def PauseVm(self, request: nm.PauseVmRequest, context: Any) -> nm.PauseVmResponse:
        return nm.PauseVmResponse(
            vm=vm_info_pb(self.driver.pause_vm(_instance_id(request.instance_id))))

    def UnpauseVm(self, request: nm.UnpauseVmRequest, context: Any) -> nm.UnpauseVmResponse:
        return nm.UnpauseVmResponse(
            vm=vm_info_pb(self.driver.unpause_vm(_instance_id(request.instance_id))))

    def SuspendVm(self, request: nm.SuspendVmRequest, context: Any) -> nm.SuspendVmResponse:
        vm, path = self.driver.suspend_vm(_instance_id(request.instance_id))
        return nm.SuspendVmResponse(vm=vm_info_pb(vm), suspend_file=path)

    def ResumeVm(self, request: nm.ResumeVmRequest, context: Any) -> nm.ResumeVmResponse:
        suspend_file = request.suspend_file or request.instance.status.suspend_image
        vm = self.driver.resume_vm(self._spec(request.instance, request.networks), suspend_file)
        return nm.ResumeVmResponse(vm=vm_info_pb(vm))

    def PrepareReceiveVm(self, request: nm.PrepareReceiveVmRequest,
                         context: Any) -> nm.PrepareReceiveVmResponse:
        cookie, paths = self.driver.prepare_receive(self._spec(request.instance,
                                                               request.networks))
        return nm.PrepareReceiveVmResponse(cookie=cookie, paths=nm.MigrationPaths(
            disks=paths.disks, kernel=paths.kernel, initrd=paths.initrd,
            console_log=paths.console_log))

    def PrepareSourceVm(self, request: nm.PrepareSourceVmRequest,
                        context: Any) -> nm.PrepareSourceVmResponse:
        vm = self.driver.prepare_source(_instance_id(request.instance_id))
        return nm.PrepareSourceVmResponse(vm=vm_info_pb(vm))

    def SendVm(self, request: nm.SendVmRequest, context: Any) -> nm.SendVmResponse:
        p = request.paths
        paths = MigrationPaths(disks=tuple(p.disks), kernel=p.kernel, initrd=p.initrd,
                               console_log=p.console_log) if request.HasField("paths") else None
        vm = self.driver.send_vm(_instance_id(request.instance_id), request.target_uri,
                                 request.cookie, paths)
        return nm.SendVmResponse(vm=vm_info_pb(vm))

    def ReceiveVm(self, request: nm.ReceiveVmRequest, context: Any) -> nm.ReceiveVmResponse:
        vm = self.driver.receive_vm(_instance_id(request.instance_id), request.cookie)
        return nm.ReceiveVmResponse(vm=vm_info_pb(vm))

    def CancelReceiveVm(self, request: nm.CancelReceiveVmRequest,
                        context: Any) -> nm.CancelReceiveVmResponse:
        vm = self.driver.cancel_receive(_instance_id(request.instance_id), request.cookie)
        if vm is None:
            return nm.CancelReceiveVmResponse()
        return nm.CancelReceiveVmResponse(arrived=True, vm=vm_info_pb(vm))

    def GetVm(self, request: nm.GetVmRequest, context: Any) -> nm.GetVmResponse:
        vm = self.driver.get_vm(_instance_id(request.instance_id))
        return nm.GetVmResponse(vm=vm_info_pb(vm))

    def GetVmStats(self, request: nm.GetVmStatsRequest, context: Any) -> nm.GetVmStatsResponse:
        stats = self.driver.vm_stats(_instance_id(request.instance_id))
        return nm.GetVmStatsResponse(stats=vm_stats_pb(stats))

    def ListVms(self, request: nm.ListVmsRequest, context: Any) -> nm.ListVmsResponse:
        if request.page_size < 0:
            raise InvalidArgument("page_size must not be negative")
        size = min(request.page_size or MAX_PAGE, MAX_PAGE)
        after = 0
        if request.page_token:
            if not request.page_token.isdigit():
                raise InvalidArgument("page_token is not one this node manager gave")
            after = int(request.page_token)
        vms = [v for v in self.driver.list_vms() if v.instance_id > after]
        page = vms[:size]
        token = str(page[-1].instance_id) if len(vms) > size else ""
        return nm.ListVmsResponse(vms=[vm_info_pb(v) for v in page], next_page_token=token)
