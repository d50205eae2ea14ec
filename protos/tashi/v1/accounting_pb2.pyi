import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tashi.v1 import resources_pb2 as _resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UsageGroupBy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_GROUP_BY_UNSPECIFIED: _ClassVar[UsageGroupBy]
    USAGE_GROUP_BY_USER: _ClassVar[UsageGroupBy]
    USAGE_GROUP_BY_INSTANCE: _ClassVar[UsageGroupBy]
    USAGE_GROUP_BY_HOST: _ClassVar[UsageGroupBy]

class LedgerEntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEDGER_ENTRY_KIND_UNSPECIFIED: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_EVENT: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_GAP: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_DRIFT: _ClassVar[LedgerEntryKind]
USAGE_GROUP_BY_UNSPECIFIED: UsageGroupBy
USAGE_GROUP_BY_USER: UsageGroupBy
USAGE_GROUP_BY_INSTANCE: UsageGroupBy
USAGE_GROUP_BY_HOST: UsageGroupBy
LEDGER_ENTRY_KIND_UNSPECIFIED: LedgerEntryKind
LEDGER_ENTRY_KIND_EVENT: LedgerEntryKind
LEDGER_ENTRY_KIND_GAP: LedgerEntryKind
LEDGER_ENTRY_KIND_DRIFT: LedgerEntryKind

class GetUsageRequest(_message.Message):
    __slots__ = ("user", "start_time", "end_time", "group_by")
    USER_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    user: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    group_by: UsageGroupBy
    def __init__(self, user: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., group_by: _Optional[_Union[UsageGroupBy, str]] = ...) -> None: ...

class UsageFigures(_message.Message):
    __slots__ = ("seconds", "core_seconds", "memory_mib_seconds")
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    CORE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_SECONDS_FIELD_NUMBER: _ClassVar[int]
    seconds: float
    core_seconds: float
    memory_mib_seconds: float
    def __init__(self, seconds: _Optional[float] = ..., core_seconds: _Optional[float] = ..., memory_mib_seconds: _Optional[float] = ...) -> None: ...

class UsageRecord(_message.Message):
    __slots__ = ("user", "instance_id", "instance_name", "host_id", "host_name", "hosts", "instance_count", "running", "paused")
    USER_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_NAME_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_NAME_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    user: str
    instance_id: int
    instance_name: str
    host_id: int
    host_name: str
    hosts: _containers.RepeatedScalarFieldContainer[str]
    instance_count: int
    running: UsageFigures
    paused: UsageFigures
    def __init__(self, user: _Optional[str] = ..., instance_id: _Optional[int] = ..., instance_name: _Optional[str] = ..., host_id: _Optional[int] = ..., host_name: _Optional[str] = ..., hosts: _Optional[_Iterable[str]] = ..., instance_count: _Optional[int] = ..., running: _Optional[_Union[UsageFigures, _Mapping]] = ..., paused: _Optional[_Union[UsageFigures, _Mapping]] = ...) -> None: ...

class LedgerGap(_message.Message):
    __slots__ = ("after_seq", "resume_seq", "start_time", "end_time", "reason")
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    RESUME_SEQ_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    resume_seq: int
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, after_seq: _Optional[int] = ..., resume_seq: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class LedgerDrift(_message.Message):
    __slots__ = ("instance_id", "owner", "ledger", "cluster", "seq", "time", "reason")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    instance_id: int
    owner: str
    ledger: _resources_pb2.Instance
    cluster: _resources_pb2.Instance
    seq: int
    time: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, instance_id: _Optional[int] = ..., owner: _Optional[str] = ..., ledger: _Optional[_Union[_resources_pb2.Instance, _Mapping]] = ..., cluster: _Optional[_Union[_resources_pb2.Instance, _Mapping]] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class LedgerEntry(_message.Message):
    __slots__ = ("id", "kind", "event", "gap", "drift")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    GAP_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    id: int
    kind: LedgerEntryKind
    event: _resources_pb2.Event
    gap: LedgerGap
    drift: LedgerDrift
    def __init__(self, id: _Optional[int] = ..., kind: _Optional[_Union[LedgerEntryKind, str]] = ..., event: _Optional[_Union[_resources_pb2.Event, _Mapping]] = ..., gap: _Optional[_Union[LedgerGap, _Mapping]] = ..., drift: _Optional[_Union[LedgerDrift, _Mapping]] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("records", "start_time", "end_time", "seq", "gaps")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    GAPS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[UsageRecord]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    seq: int
    gaps: _containers.RepeatedCompositeFieldContainer[LedgerGap]
    def __init__(self, records: _Optional[_Iterable[_Union[UsageRecord, _Mapping]]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., seq: _Optional[int] = ..., gaps: _Optional[_Iterable[_Union[LedgerGap, _Mapping]]] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "kinds", "types", "instance_id", "host_id", "owner", "start_time", "end_time", "after_seq")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    kinds: _containers.RepeatedScalarFieldContainer[LedgerEntryKind]
    types: _containers.RepeatedScalarFieldContainer[_resources_pb2.EventType]
    instance_id: int
    host_id: int
    owner: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    after_seq: int
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., kinds: _Optional[_Iterable[_Union[LedgerEntryKind, str]]] = ..., types: _Optional[_Iterable[_Union[_resources_pb2.EventType, str]]] = ..., instance_id: _Optional[int] = ..., host_id: _Optional[int] = ..., owner: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., after_seq: _Optional[int] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LedgerEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[LedgerEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
