"""NodeManagerService: translates protobuf to driver calls.

The driver's `NmError`s are `ServiceError`s: the shared error interceptor
answers their status (see `tashi.runtime.interceptors`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from tashi.nm.answering import Answering
from tashi.nm.console import ConsoleSession, LogReader
from tashi.nm.convert import spec_from_instance, vm_info_pb, vm_stats_pb
from tashi.nm.driver import Driver
from tashi.nm.errors import FailedPrecondition, InvalidArgument, NmError
from tashi.nm.model import MigrationPaths, VmInfo, VmSpec
from tashi.nm.plumbing import BridgeLookup, bridges_for
from tashi.runtime.errors import ServiceError
from tashi.runtime.interceptors import new_error_id
from tashi.runtime.nm_client import MAX_STARTS
from tashi.v1 import node_manager_pb2 as nm
from tashi.v1 import node_manager_pb2_grpc as nm_grpc
from tashi.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

MAX_PAGE = 1000
# Console streams open at once: each holds a server thread (of 32), so the
# cluster manager's other calls always find one.
CONSOLE_STREAMS = 16
FOLLOW_POLL_SECONDS = 0.2  # a follow looks for new output this often
# After the VM ends, a follow still waits this long for its last words: virtlogd
# writes them a moment after the hypervisor reports the end.
FOLLOW_GRACE_SECONDS = 1.0
ATTACH_WAIT_SECONDS = 0.5  # an attached session checks for a hang-up this often
# Starts of one StartVms call made at once (a real hypervisor starts guests in
# parallel; each start holds only its own VM's lock).
PARALLEL_STARTS = 4


class ResourceExhausted(NmError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


def _instance_id(value: int) -> int:
    if value <= 0:
        raise InvalidArgument("instance_id must be positive")
    return value


class NodeManagerServicer(nm_grpc.NodeManagerServiceServicer):
    def __init__(self, driver: Driver, bridge_lookup: BridgeLookup | None = None,
                 stamp: Callable[[], int] | None = None,
                 answering: Answering | None = None) -> None:
        """`stamp`: the reporter's next report_seq (ReportClock.next), put on the
        answers of actions on VMs; `answering`: where the starts being answered
        are noted for the reporter."""
        self.driver = driver
        self.bridge_lookup = bridge_lookup
        self.stamp = stamp
        self.answering = answering or Answering()
        self._console_streams = threading.BoundedSemaphore(CONSOLE_STREAMS)
        self._attached: set[int] = set()  # instances with an interactive session
        self._attached_lock = threading.Lock()
        self._starts = ThreadPoolExecutor(PARALLEL_STARTS, thread_name_prefix="nm-start")

    def _ran(self, vm: VmInfo) -> nm.VmInfo:
        """A VM that now runs here, numbered after it ran: a registration whose list
        was taken before is told from one taken after (RegisterHostRequest)."""
        info = vm_info_pb(vm)
        if self.stamp is not None:
            info.report_seq = self.stamp()
        return info

    def _act(self, act: Callable[[int], VmInfo], instance_id: int) -> nm.VmInfo:
        """`act` on a VM; its answer numbered as `_before` says."""
        iid = _instance_id(instance_id)
        seq = self._before()
        info = vm_info_pb(act(iid))
        info.report_seq = seq
        return info

    def _before(self) -> int:
        """The number of an action's answer, taken just before it begins: the CM does
        not apply a report of the VM observed earlier that reaches it after the
        answer (it would undo the action), while one observed during the action
        (the VM exiting as it shuts down) is numbered after."""
        return self.stamp() if self.stamp is not None else 0

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
        with self.answering.start(request.instance.id):
            vm = self.driver.start_vm(self._spec(request.instance, request.networks))
        return nm.StartVmResponse(vm=self._ran(vm))

    def StartVms(self, request: nm.StartVmsRequest, context: Any) -> nm.StartVmsResponse:
        """Each start as StartVm would make it; one refused does not stop the others."""
        if len(request.starts) > MAX_STARTS:
            raise InvalidArgument(f"at most {MAX_STARTS} starts per call, got "
                                  f"{len(request.starts)}")
        return nm.StartVmsResponse(results=list(self._starts.map(self._one_start,
                                                                 request.starts)))

    def _one_start(self, start: nm.StartVmRequest) -> nm.StartVmResult:
        iid = start.instance.id
        try:
            with self.answering.start(iid):
                vm = self.driver.start_vm(self._spec(start.instance, start.networks))
        except ServiceError as exc:
            log.log(logging.WARNING if exc.code == grpc.StatusCode.INTERNAL else logging.DEBUG,
                    "StartVms: instance %d: %s %s", iid, exc.code.name, exc.message)
            return nm.StartVmResult(instance_id=iid, code=exc.code.value[0],
                                    message=exc.message)
        except Exception:
            error_id = new_error_id()
            log.exception("StartVms: instance %d: internal error; id %s", iid, error_id)
            return nm.StartVmResult(instance_id=iid, code=grpc.StatusCode.INTERNAL.value[0],
                                    message=f"internal error; id {error_id}")
        return nm.StartVmResult(instance_id=iid, vm=self._ran(vm))

    def ShutdownVm(self, request: nm.ShutdownVmRequest, context: Any) -> nm.ShutdownVmResponse:
        return nm.ShutdownVmResponse(vm=self._act(self.driver.shutdown_vm, request.instance_id))

    def DestroyVm(self, request: nm.DestroyVmRequest, context: Any) -> nm.DestroyVmResponse:
        return nm.DestroyVmResponse(vm=self._act(self.driver.destroy_vm, request.instance_id))

    def PauseVm(self, request: nm.PauseVmRequest, context: Any) -> nm.PauseVmResponse:
        return nm.PauseVmResponse(vm=self._act(self.driver.pause_vm, request.instance_id))

    def UnpauseVm(self, request: nm.UnpauseVmRequest, context: Any) -> nm.UnpauseVmResponse:
        return nm.UnpauseVmResponse(vm=self._act(self.driver.unpause_vm, request.instance_id))

    def SuspendVm(self, request: nm.SuspendVmRequest, context: Any) -> nm.SuspendVmResponse:
        iid = _instance_id(request.instance_id)
        seq = self._before()
        vm, path = self.driver.suspend_vm(iid)
        info = vm_info_pb(vm)
        info.report_seq = seq
        return nm.SuspendVmResponse(vm=info, suspend_file=path)

    def ResumeVm(self, request: nm.ResumeVmRequest, context: Any) -> nm.ResumeVmResponse:
        suspend_file = request.suspend_file or request.instance.status.suspend_image
        with self.answering.start(request.instance.id):
            vm = self.driver.resume_vm(self._spec(request.instance, request.networks),
                                       suspend_file)
        return nm.ResumeVmResponse(vm=self._ran(vm))

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
        return nm.ReceiveVmResponse(vm=self._ran(vm))

    def CancelReceiveVm(self, request: nm.CancelReceiveVmRequest,
                        context: Any) -> nm.CancelReceiveVmResponse:
        vm = self.driver.cancel_receive(_instance_id(request.instance_id), request.cookie)
        if vm is None:
            return nm.CancelReceiveVmResponse()
        return nm.CancelReceiveVmResponse(arrived=True, vm=self._ran(vm))

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

    # -- the serial console --------------------------------------------------------
    def _console_slot(self) -> None:
        if not self._console_streams.acquire(blocking=False):
            raise ResourceExhausted(f"this node manager serves {CONSOLE_STREAMS} console "
                                    "streams at most; try again later")

    def ReadVmConsole(self, request: nm.ReadVmConsoleRequest,
                      context: Any) -> Iterator[nm.ReadVmConsoleResponse]:
        """The log as kept (rotated files first), then with `follow` what is added,
        until the VM is no longer here or the caller hangs up."""
        iid = _instance_id(request.instance_id)
        if request.tail_bytes < 0:
            raise InvalidArgument("tail_bytes must not be negative")
        log_ = self.driver.console_log(iid)
        self._console_slot()
        reader = LogReader(log_.path, request.tail_bytes)
        try:
            for chunk in reader.read():
                yield nm.ReadVmConsoleResponse(data=chunk)
            ended_at = 0.0
            while request.follow and context.is_active():
                sent = False
                for chunk in reader.read():
                    sent = True
                    yield nm.ReadVmConsoleResponse(data=chunk)
                if sent:
                    continue
                if not log_.running():
                    ended_at = ended_at or time.monotonic()
                    if time.monotonic() - ended_at >= FOLLOW_GRACE_SECONDS:
                        return
                time.sleep(FOLLOW_POLL_SECONDS)
        finally:
            if reader.overruns:
                log.warning("console of instance %d: the log rotated past a slow reader %d "
                            "times; output may be missing from what it was sent", iid,
                            reader.overruns)
            reader.close()
            self._console_streams.release()

    def AttachVmConsole(self, request_iterator: Iterator[nm.AttachVmConsoleRequest],
                        context: Any) -> Iterator[nm.AttachVmConsoleResponse]:
        """The serial port read-write.  One session per VM: a second one is refused
        (FAILED_PRECONDITION) rather than taking over, so nobody is cut off from a
        console by someone else; a session ends when its caller hangs up."""
        self._console_slot()
        try:
            first = _first_request(request_iterator)
            if first is None:
                return
            iid = _instance_id(first.instance_id)
            with self._attached_lock:
                if iid in self._attached:
                    raise FailedPrecondition(f"instance {iid}'s console is already attached; "
                                             "one interactive session at a time")
                self._attached.add(iid)
            try:
                session = self.driver.open_console(iid)
                context.add_callback(session.close)  # a hang-up frees the console at once
                try:
                    if first.data:
                        session.send(first.data)
                    threading.Thread(target=_type_into, args=(request_iterator, session),
                                     name=f"console-{iid}-input", daemon=True).start()
                    while context.is_active():
                        data = session.recv(ATTACH_WAIT_SECONDS)
                        if data is None:
                            return  # the VM ended
                        if data:
                            yield nm.AttachVmConsoleResponse(data=data)
                finally:
                    session.close()
            finally:
                with self._attached_lock:
                    self._attached.discard(iid)
        finally:
            self._console_streams.release()


def _first_request(requests: Iterator[Any]) -> Any:
    """The stream's first message; None when the caller sent none."""
    try:
        return next(requests, None)
    except grpc.RpcError:  # the caller went away
        return None


def _type_into(requests: Iterator[nm.AttachVmConsoleRequest], session: ConsoleSession) -> None:
    """What the caller types, into the serial port, until it stops sending (a
    half-close leaves the output flowing) or the session ends."""
    try:
        for req in requests:
            if req.data and not session.send(req.data):
                return
    except (grpc.RpcError, ServiceError):
        return  # the call ended, or sent what is no request: no more input
