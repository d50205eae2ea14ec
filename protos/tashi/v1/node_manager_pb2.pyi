from tashi.v1 import resources_pb2 as _resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VmInfo(_message.Message):
    __slots__ = ("instance_id", "vm_id", "state", "name", "owner", "cores", "memory_mib", "report_seq")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    REPORT_SEQ_FIELD_NUMBER: _ClassVar[int]
    instance_id: int
    vm_id: str
    state: _resources_pb2.InstanceState
    name: str
    owner: str
    cores: int
    memory_mib: int
    report_seq: int
    def __init__(self, instance_id: _Optional[int] = ..., vm_id: _Optional[str] = ..., state: _Optional[_Union[_resources_pb2.InstanceState, str]] = ..., name: _Optional[str] = ..., owner: _Optional[str] = ..., cores: _Optional[int] = ..., memory_mib: _Optional[int] = ..., report_seq: _Optional[int] = ...) -> None: ...

class VmStats(_message.Message):
    __slots__ = ("instance_id", "cpu_time_seconds", "memory_bytes", "block_read_bytes", "block_write_bytes", "block_read_requests", "block_write_requests", "network_receive_bytes", "network_transmit_bytes", "network_receive_packets", "network_transmit_packets")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    CPU_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    BLOCK_READ_BYTES_FIELD_NUMBER: _ClassVar[int]
    BLOCK_WRITE_BYTES_FIELD_NUMBER: _ClassVar[int]
    BLOCK_READ_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_WRITE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_RECEIVE_BYTES_FIELD_NUMBER: _ClassVar[int]
    NETWORK_TRANSMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    NETWORK_RECEIVE_PACKETS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_TRANSMIT_PACKETS_FIELD_NUMBER: _ClassVar[int]
    instance_id: int
    cpu_time_seconds: float
    memory_bytes: int
    block_read_bytes: int
    block_write_bytes: int
    block_read_requests: int
    block_write_requests: int
    network_receive_bytes: int
    network_transmit_bytes: int
    network_receive_packets: int
    network_transmit_packets: int
    def __init__(self, instance_id: _Optional[int] = ..., cpu_time_seconds: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., block_read_bytes: _Optional[int] = ..., block_write_bytes: _Optional[int] = ..., block_read_requests: _Optional[int] = ..., block_write_requests: _Optional[int] = ..., network_receive_bytes: _Optional[int] = ..., network_transmit_bytes: _Optional[int] = ..., network_receive_packets: _Optional[int] = ..., network_transmit_packets: _Optional[int] = ...) -> None: ...

class StartVmRequest(_message.Message):
    __slots__ = ("request_id", "instance", "networks")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance: _resources_pb2.Instance
    networks: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Network]
    def __init__(self, request_id: _Optional[str] = ..., instance: _Optional[_Union[_resources_pb2.Instance, _Mapping]] = ..., networks: _Optional[_Iterable[_Union[_resources_pb2.Network, _Mapping]]] = ...) -> None: ...

class StartVmResponse(_message.Message):
    __slots__ = ("vm",)
    VM_FIELD_NUMBER: _ClassVar[int]
    vm: VmInfo
    def __init__(self, vm: _Optional[_Union[VmInfo, _Mapping]] = ...) -> None: ...

class StartVmsRequest(_message.Message):
    __slots__ = ("starts",)
    STARTS_FIELD_NUMBER: _ClassVar[int]
    starts: _containers.RepeatedCompositeFieldContainer[StartVmRequest]
    def __init__(self, starts: _Optional[_Iterable[_Union[StartVmRequest, _Mapping]]] = ...) -> None: ...

class StartVmResult(_message.Message):
    __slots__ = ("instance_id", "vm", "code", "message")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    instance_id: int
    vm: VmInfo
    code: int
    message: str
    def __init__(self, instance_id: _Optional[int] = ..., vm: _Optional[_Union[VmInfo, _Mapping]] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class StartVmsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[StartVmResult]
    def __init__(self, results: _Optional[_Iterable[_Union[StartVmResult, _Mapping]]] = ...) -> None: ...

class ShutdownVmRequest(_message.Message):
    __slots__ = ("request_id", "instance_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance_id: int
    def __init__(self, request_id: _Optional[str] = ..., instance_id: _Optional[int] = ...) -> None: ...

class ShutdownVmResponse(_message.Message):
    __slots__ = ("vm",)
    VM_FIELD_NUMBER: _ClassVar[int]
    vm: VmInfo
    def __init__(self, vm: _Optional[_Union[VmInfo, _Mapping]] = ...) -> None: ...

class DestroyVmRequest(_message.Message):
    __slots__ = ("request_id", "instance_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance_id: int
    def __init__(self, request_id: _Optional[str] = ..., instance_id: _Optional[int] = ...) -> None: ...

class DestroyVmResponse(_message.Message):
    __slots__ = ("vm",)
    VM_FIELD_NUMBER: _ClassVar[int]
    vm: VmInfo
    def __init__(self, vm: _Optional[_Union[VmInfo, _Mapping]] = ...) -> None: ...

class PauseVmRequest(_message.Message):
    __slots__ = ("request_id", "instance_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance_id: int
    def __init__(self, request_id: _Optional[str] = ..., instance_id: _Optional[int] = ...) -> None: ...

class PauseVmResponse(_message.Message):
    __slots__ = ("vm",)
    VM_FIELD_NUMBER: _ClassVar[int]
    vm: VmInfo
    def __init__(self, vm: _Optional[_Union[VmInfo, _Mapping]] = ...) -> None: ...

class UnpauseVmRequest(_message.Message):
    __slots__ = ("request_id", "instance_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance_id: int
    def __init__(self, request_id: _Optional[str] = ..., instance_id: _Optional[int] = ...) -> None: ...

class UnpauseVmResponse(_message.Message):
    __slots__ = ("vm",)
    VM_FIELD_NUMBER: _ClassVar[int]
    vm: VmInfo
    def __init__(self, vm: _Optional[_Union[VmInfo, _Mapping]] = ...) -> None: ...

class SuspendVmRequest(_message.Message):
    __slots__ = ("request_id", "instance_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance_id: int
    def __init__(self, request_id: _Optional[str] = ..., instance_id: _Optional[int] = ...) -> None: ...

class SuspendVmResponse(_message.Message):
    __slots__ = ("vm", "suspend_file")
    VM_FIELD_NUMBER: _ClassVar[int]
    SUSPEND_FILE_FIELD_NUMBER: _ClassVar[int]
    vm: VmInfo
    suspend_file: str
    def __init__(self, vm: _Optional[_Union[VmInfo, _Mapping]] = ..., suspend_file: _Optional[str] = ...) -> None: ...

class ResumeVmRequest(_message.Message):
    __slots__ = ("request_id", "instance", "suspend_file", "networks")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    SUSPEND_FILE_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance: _resources_pb2.Instance
    suspend_file: str
    networks: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Network]
    def __init__(self, request_id: _Optional[str] = ..., instance: _Optional[_Union[_resources_pb2.Instance, _Mapping]] = ..., suspend_file: _Optional[str] = ..., networks: _Optional[_Iterable[_Union[_resources_pb2.Network, _Mapping]]] = ...) -> None: ...

class ResumeVmResponse(_message.Message):
    __slots__ = ("vm",)
    VM_FIELD_NUMBER: _ClassVar[int]
    vm: VmInfo
    def __init__(self, vm: _Optional[_Union[VmInfo, _Mapping]] = ...) -> None: ...

class PrepareReceiveVmRequest(_message.Message):
    __slots__ = ("request_id", "instance", "networks")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance: _resources_pb2.Instance
    networks: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Network]
    def __init__(self, request_id: _Optional[str] = ..., instance: _Optional[_Union[_resources_pb2.Instance, _Mapping]] = ..., networks: _Optional[_Iterable[_Union[_resources_pb2.Network, _Mapping]]] = ...) -> None: ...

class PrepareReceiveVmResponse(_message.Message):
    __slots__ = ("cookie", "paths")
    COOKIE_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    cookie: str
    paths: MigrationPaths
    def __init__(self, cookie: _Optional[str] = ..., paths: _Optional[_Union[MigrationPaths, _Mapping]] = ...) -> None: ...

class MigrationPaths(_message.Message):
    __slots__ = ("disks", "kernel", "initrd", "console_log")
    DISKS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    INITRD_FIELD_NUMBER: _ClassVar[int]
    CONSOLE_LOG_FIELD_NUMBER: _ClassVar[int]
    disks: _containers.RepeatedScalarFieldContainer[str]
    kernel: str
    initrd: str
    console_log: str
    def __init__(self, disks: _Optional[_Iterable[str]] = ..., kernel: _Optional[str] = ..., initrd: _Optional[str] = ..., console_log: _Optional[str] = ...) -> None: ...

class PrepareSourceVmRequest(_message.Message):
    __slots__ = ("request_id", "instance_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance_id: int
    def __init__(self, request_id: _Optional[str] = ..., instance_id: _Optional[int] = ...) -> None: ...

class PrepareSourceVmResponse(_message.Message):
    __slots__ = ("vm",)
    VM_FIELD_NUMBER: _ClassVar[int]
    vm: VmInfo
    def __init__(self, vm: _Optional[_Union[VmInfo, _Mapping]] = ...) -> None: ...

class SendVmRequest(_message.Message):
    __slots__ = ("request_id", "instance_id", "target_uri", "cookie", "paths")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_URI_FIELD_NUMBER: _ClassVar[int]
    COOKIE_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance_id: int
    target_uri: str
    cookie: str
    paths: MigrationPaths
    def __init__(self, request_id: _Optional[str] = ..., instance_id: _Optional[int] = ..., target_uri: _Optional[str] = ..., cookie: _Optional[str] = ..., paths: _Optional[_Union[MigrationPaths, _Mapping]] = ...) -> None: ...

class SendVmResponse(_message.Message):
    __slots__ = ("vm",)
    VM_FIELD_NUMBER: _ClassVar[int]
    vm: VmInfo
    def __init__(self, vm: _Optional[_Union[VmInfo, _Mapping]] = ...) -> None: ...

class ReceiveVmRequest(_message.Message):
    __slots__ = ("request_id", "instance_id", "cookie")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    COOKIE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance_id: int
    cookie: str
    def __init__(self, request_id: _Optional[str] = ..., instance_id: _Optional[int] = ..., cookie: _Optional[str] = ...) -> None: ...

class ReceiveVmResponse(_message.Message):
    __slots__ = ("vm",)
    VM_FIELD_NUMBER: _ClassVar[int]
    vm: VmInfo
    def __init__(self, vm: _Optional[_Union[VmInfo, _Mapping]] = ...) -> None: ...

class CancelReceiveVmRequest(_message.Message):
    __slots__ = ("request_id", "instance_id", "cookie")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    COOKIE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance_id: int
    cookie: str
    def __init__(self, request_id: _Optional[str] = ..., instance_id: _Optional[int] = ..., cookie: _Optional[str] = ...) -> None: ...

class CancelReceiveVmResponse(_message.Message):
    __slots__ = ("arrived", "vm")
    ARRIVED_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    arrived: bool
    vm: VmInfo
    def __init__(self, arrived: _Optional[bool] = ..., vm: _Optional[_Union[VmInfo, _Mapping]] = ...) -> None: ...

class GetVmRequest(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: int
    def __init__(self, instance_id: _Optional[int] = ...) -> None: ...

class GetVmResponse(_message.Message):
    __slots__ = ("vm",)
    VM_FIELD_NUMBER: _ClassVar[int]
    vm: VmInfo
    def __init__(self, vm: _Optional[_Union[VmInfo, _Mapping]] = ...) -> None: ...

class GetVmStatsRequest(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: int
    def __init__(self, instance_id: _Optional[int] = ...) -> None: ...

class GetVmStatsResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: VmStats
    def __init__(self, stats: _Optional[_Union[VmStats, _Mapping]] = ...) -> None: ...

class ReadVmConsoleRequest(_message.Message):
    __slots__ = ("instance_id", "follow", "tail_bytes")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_BYTES_FIELD_NUMBER: _ClassVar[int]
    instance_id: int
    follow: bool
    tail_bytes: int
    def __init__(self, instance_id: _Optional[int] = ..., follow: _Optional[bool] = ..., tail_bytes: _Optional[int] = ...) -> None: ...

class ReadVmConsoleResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class AttachVmConsoleRequest(_message.Message):
    __slots__ = ("instance_id", "data")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    instance_id: int
    data: bytes
    def __init__(self, instance_id: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class AttachVmConsoleResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ListVmsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListVmsResponse(_message.Message):
    __slots__ = ("vms", "next_page_token")
    VMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    vms: _containers.RepeatedCompositeFieldContainer[VmInfo]
    next_page_token: str
    def __init__(self, vms: _Optional[_Iterable[_Union[VmInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
