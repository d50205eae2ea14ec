from tashi.v1 import resources_pb2 as _resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Placement(_message.Message):
    __slots__ = ("instance_id", "host_id", "nic_ips")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    NIC_IPS_FIELD_NUMBER: _ClassVar[int]
    instance_id: int
    host_id: int
    nic_ips: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, instance_id: _Optional[int] = ..., host_id: _Optional[int] = ..., nic_ips: _Optional[_Iterable[str]] = ...) -> None: ...

class PlacementResult(_message.Message):
    __slots__ = ("instance_id", "accepted", "reason", "instance")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance_id: int
    accepted: bool
    reason: str
    instance: _resources_pb2.Instance
    def __init__(self, instance_id: _Optional[int] = ..., accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., instance: _Optional[_Union[_resources_pb2.Instance, _Mapping]] = ...) -> None: ...

class ActivateInstancesRequest(_message.Message):
    __slots__ = ("request_id", "placements")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PLACEMENTS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    placements: _containers.RepeatedCompositeFieldContainer[Placement]
    def __init__(self, request_id: _Optional[str] = ..., placements: _Optional[_Iterable[_Union[Placement, _Mapping]]] = ...) -> None: ...

class ActivateInstancesResponse(_message.Message):
    __slots__ = ("results", "seq")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PlacementResult]
    seq: int
    def __init__(self, results: _Optional[_Iterable[_Union[PlacementResult, _Mapping]]] = ..., seq: _Optional[int] = ...) -> None: ...

class Hold(_message.Message):
    __slots__ = ("instance_id", "reason")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    instance_id: int
    reason: str
    def __init__(self, instance_id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class HoldInstancesRequest(_message.Message):
    __slots__ = ("request_id", "holds")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    holds: _containers.RepeatedCompositeFieldContainer[Hold]
    def __init__(self, request_id: _Optional[str] = ..., holds: _Optional[_Iterable[_Union[Hold, _Mapping]]] = ...) -> None: ...

class HoldInstancesResponse(_message.Message):
    __slots__ = ("instances",)
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Instance]
    def __init__(self, instances: _Optional[_Iterable[_Union[_resources_pb2.Instance, _Mapping]]] = ...) -> None: ...
