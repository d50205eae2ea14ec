import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tashi.v1 import resources_pb2 as _resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InstanceReport(_message.Message):
    __slots__ = ("instance_id", "vm_id", "state", "message", "time", "spec", "suspend_file", "report_seq")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    SUSPEND_FILE_FIELD_NUMBER: _ClassVar[int]
    REPORT_SEQ_FIELD_NUMBER: _ClassVar[int]
    instance_id: int
    vm_id: str
    state: _resources_pb2.InstanceState
    message: str
    time: _timestamp_pb2.Timestamp
    spec: _resources_pb2.Instance
    suspend_file: str
    report_seq: int
    def __init__(self, instance_id: _Optional[int] = ..., vm_id: _Optional[str] = ..., state: _Optional[_Union[_resources_pb2.InstanceState, str]] = ..., message: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., spec: _Optional[_Union[_resources_pb2.Instance, _Mapping]] = ..., suspend_file: _Optional[str] = ..., report_seq: _Optional[int] = ...) -> None: ...

class RegisterHostRequest(_message.Message):
    __slots__ = ("name", "cores", "memory_mib", "version", "nm_address", "instances", "networks", "request_id", "capabilities", "snapshot_seq", "incarnation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NM_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_SEQ_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    cores: int
    memory_mib: int
    version: str
    nm_address: str
    instances: _containers.RepeatedCompositeFieldContainer[InstanceReport]
    networks: _containers.RepeatedCompositeFieldContainer[_resources_pb2.HostNetworkStatus]
    request_id: str
    capabilities: _resources_pb2.HostCapabilities
    snapshot_seq: int
    incarnation: int
    def __init__(self, name: _Optional[str] = ..., cores: _Optional[int] = ..., memory_mib: _Optional[int] = ..., version: _Optional[str] = ..., nm_address: _Optional[str] = ..., instances: _Optional[_Iterable[_Union[InstanceReport, _Mapping]]] = ..., networks: _Optional[_Iterable[_Union[_resources_pb2.HostNetworkStatus, _Mapping]]] = ..., request_id: _Optional[str] = ..., capabilities: _Optional[_Union[_resources_pb2.HostCapabilities, _Mapping]] = ..., snapshot_seq: _Optional[int] = ..., incarnation: _Optional[int] = ...) -> None: ...

class RegisterHostResponse(_message.Message):
    __slots__ = ("host", "heartbeat_seconds", "expire_host_seconds", "heartbeat_interval_seconds", "expire_after_seconds", "beat_port", "beat_token")
    HOST_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_HOST_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BEAT_PORT_FIELD_NUMBER: _ClassVar[int]
    BEAT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    host: _resources_pb2.Host
    heartbeat_seconds: int
    expire_host_seconds: int
    heartbeat_interval_seconds: float
    expire_after_seconds: float
    beat_port: int
    beat_token: bytes
    def __init__(self, host: _Optional[_Union[_resources_pb2.Host, _Mapping]] = ..., heartbeat_seconds: _Optional[int] = ..., expire_host_seconds: _Optional[int] = ..., heartbeat_interval_seconds: _Optional[float] = ..., expire_after_seconds: _Optional[float] = ..., beat_port: _Optional[int] = ..., beat_token: _Optional[bytes] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("name", "networks", "networks_changed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    name: str
    networks: _containers.RepeatedCompositeFieldContainer[_resources_pb2.HostNetworkStatus]
    networks_changed: bool
    def __init__(self, name: _Optional[str] = ..., networks: _Optional[_Iterable[_Union[_resources_pb2.HostNetworkStatus, _Mapping]]] = ..., networks_changed: _Optional[bool] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("registered", "heartbeat_interval_seconds", "beat_port", "beat_token")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BEAT_PORT_FIELD_NUMBER: _ClassVar[int]
    BEAT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    registered: bool
    heartbeat_interval_seconds: float
    beat_port: int
    beat_token: bytes
    def __init__(self, registered: _Optional[bool] = ..., heartbeat_interval_seconds: _Optional[float] = ..., beat_port: _Optional[int] = ..., beat_token: _Optional[bytes] = ...) -> None: ...

class BeatRequest(_message.Message):
    __slots__ = ("host_id", "token")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    host_id: int
    token: bytes
    def __init__(self, host_id: _Optional[int] = ..., token: _Optional[bytes] = ...) -> None: ...

class BeatResponse(_message.Message):
    __slots__ = ("registered", "heartbeat_interval_seconds")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    registered: bool
    heartbeat_interval_seconds: float
    def __init__(self, registered: _Optional[bool] = ..., heartbeat_interval_seconds: _Optional[float] = ...) -> None: ...

class ReportInstancesRequest(_message.Message):
    __slots__ = ("name", "reports", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    reports: _containers.RepeatedCompositeFieldContainer[InstanceReport]
    request_id: str
    def __init__(self, name: _Optional[str] = ..., reports: _Optional[_Iterable[_Union[InstanceReport, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ReportInstancesResponse(_message.Message):
    __slots__ = ("applied_seq",)
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    applied_seq: int
    def __init__(self, applied_seq: _Optional[int] = ...) -> None: ...
