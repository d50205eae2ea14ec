import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InstanceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INSTANCE_STATE_UNSPECIFIED: _ClassVar[InstanceState]
    INSTANCE_STATE_PENDING: _ClassVar[InstanceState]
    INSTANCE_STATE_ACTIVATING: _ClassVar[InstanceState]
    INSTANCE_STATE_RUNNING: _ClassVar[InstanceState]
    INSTANCE_STATE_PAUSING: _ClassVar[InstanceState]
    INSTANCE_STATE_PAUSED: _ClassVar[InstanceState]
    INSTANCE_STATE_UNPAUSING: _ClassVar[InstanceState]
    INSTANCE_STATE_SUSPENDING: _ClassVar[InstanceState]
    INSTANCE_STATE_SUSPENDED: _ClassVar[InstanceState]
    INSTANCE_STATE_RESUMING: _ClassVar[InstanceState]
    INSTANCE_STATE_MIGRATE_PREP: _ClassVar[InstanceState]
    INSTANCE_STATE_MIGRATE_TRANS: _ClassVar[InstanceState]
    INSTANCE_STATE_SHUTTING_DOWN: _ClassVar[InstanceState]
    INSTANCE_STATE_DESTROYING: _ClassVar[InstanceState]
    INSTANCE_STATE_ORPHANED: _ClassVar[InstanceState]
    INSTANCE_STATE_HELD: _ClassVar[InstanceState]
    INSTANCE_STATE_EXITED: _ClassVar[InstanceState]

class HostState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOST_STATE_UNSPECIFIED: _ClassVar[HostState]
    HOST_STATE_NORMAL: _ClassVar[HostState]
    HOST_STATE_DRAINED: _ClassVar[HostState]
    HOST_STATE_VERSION_MISMATCH: _ClassVar[HostState]

class ImageState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_STATE_UNSPECIFIED: _ClassVar[ImageState]
    IMAGE_STATE_READY: _ClassVar[ImageState]
    IMAGE_STATE_COPYING: _ClassVar[ImageState]
    IMAGE_STATE_FAILED: _ClassVar[ImageState]

class NetworkKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NETWORK_KIND_UNSPECIFIED: _ClassVar[NetworkKind]
    NETWORK_KIND_VLAN: _ClassVar[NetworkKind]
    NETWORK_KIND_VXLAN: _ClassVar[NetworkKind]
    NETWORK_KIND_FLAT: _ClassVar[NetworkKind]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_HOST_CREATED: _ClassVar[EventType]
    EVENT_TYPE_HOST_UPDATED: _ClassVar[EventType]
    EVENT_TYPE_HOST_DELETED: _ClassVar[EventType]
    EVENT_TYPE_INSTANCE_CREATED: _ClassVar[EventType]
    EVENT_TYPE_INSTANCE_UPDATED: _ClassVar[EventType]
    EVENT_TYPE_INSTANCE_DELETED: _ClassVar[EventType]
    EVENT_TYPE_NETWORK_CREATED: _ClassVar[EventType]
    EVENT_TYPE_NETWORK_UPDATED: _ClassVar[EventType]
    EVENT_TYPE_NETWORK_DELETED: _ClassVar[EventType]
    EVENT_TYPE_USER_CREATED: _ClassVar[EventType]
INSTANCE_STATE_UNSPECIFIED: InstanceState
INSTANCE_STATE_PENDING: InstanceState
INSTANCE_STATE_ACTIVATING: InstanceState
INSTANCE_STATE_RUNNING: InstanceState
INSTANCE_STATE_PAUSING: InstanceState
INSTANCE_STATE_PAUSED: InstanceState
INSTANCE_STATE_UNPAUSING: InstanceState
INSTANCE_STATE_SUSPENDING: InstanceState
INSTANCE_STATE_SUSPENDED: InstanceState
INSTANCE_STATE_RESUMING: InstanceState
INSTANCE_STATE_MIGRATE_PREP: InstanceState
INSTANCE_STATE_MIGRATE_TRANS: InstanceState
INSTANCE_STATE_SHUTTING_DOWN: InstanceState
INSTANCE_STATE_DESTROYING: InstanceState
INSTANCE_STATE_ORPHANED: InstanceState
INSTANCE_STATE_HELD: InstanceState
INSTANCE_STATE_EXITED: InstanceState
HOST_STATE_UNSPECIFIED: HostState
HOST_STATE_NORMAL: HostState
HOST_STATE_DRAINED: HostState
HOST_STATE_VERSION_MISMATCH: HostState
IMAGE_STATE_UNSPECIFIED: ImageState
IMAGE_STATE_READY: ImageState
IMAGE_STATE_COPYING: ImageState
IMAGE_STATE_FAILED: ImageState
NETWORK_KIND_UNSPECIFIED: NetworkKind
NETWORK_KIND_VLAN: NetworkKind
NETWORK_KIND_VXLAN: NetworkKind
NETWORK_KIND_FLAT: NetworkKind
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_HOST_CREATED: EventType
EVENT_TYPE_HOST_UPDATED: EventType
EVENT_TYPE_HOST_DELETED: EventType
EVENT_TYPE_INSTANCE_CREATED: EventType
EVENT_TYPE_INSTANCE_UPDATED: EventType
EVENT_TYPE_INSTANCE_DELETED: EventType
EVENT_TYPE_NETWORK_CREATED: EventType
EVENT_TYPE_NETWORK_UPDATED: EventType
EVENT_TYPE_NETWORK_DELETED: EventType
EVENT_TYPE_USER_CREATED: EventType

class HostNetworkStatus(_message.Message):
    __slots__ = ("network_id", "ready", "reason")
    NETWORK_ID_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    network_id: int
    ready: bool
    reason: str
    def __init__(self, network_id: _Optional[int] = ..., ready: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class Host(_message.Message):
    __slots__ = ("id", "name", "up", "decayed", "state", "memory_mib", "cores", "version", "notes", "reserved_for", "nm_address", "used_cores", "used_memory_mib", "instance_count", "last_heartbeat_time", "networks", "capabilities")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    DECAYED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    CORES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FOR_FIELD_NUMBER: _ClassVar[int]
    NM_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    USED_CORES_FIELD_NUMBER: _ClassVar[int]
    USED_MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_TIME_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    up: bool
    decayed: bool
    state: HostState
    memory_mib: int
    cores: int
    version: str
    notes: str
    reserved_for: _containers.RepeatedScalarFieldContainer[str]
    nm_address: str
    used_cores: int
    used_memory_mib: int
    instance_count: int
    last_heartbeat_time: _timestamp_pb2.Timestamp
    networks: _containers.RepeatedCompositeFieldContainer[HostNetworkStatus]
    capabilities: HostCapabilities
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., up: _Optional[bool] = ..., decayed: _Optional[bool] = ..., state: _Optional[_Union[HostState, str]] = ..., memory_mib: _Optional[int] = ..., cores: _Optional[int] = ..., version: _Optional[str] = ..., notes: _Optional[str] = ..., reserved_for: _Optional[_Iterable[str]] = ..., nm_address: _Optional[str] = ..., used_cores: _Optional[int] = ..., used_memory_mib: _Optional[int] = ..., instance_count: _Optional[int] = ..., last_heartbeat_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., networks: _Optional[_Iterable[_Union[HostNetworkStatus, _Mapping]]] = ..., capabilities: _Optional[_Union[HostCapabilities, _Mapping]] = ...) -> None: ...

class HostCapabilities(_message.Message):
    __slots__ = ("migration_uri", "live_migration", "reason")
    MIGRATION_URI_FIELD_NUMBER: _ClassVar[int]
    LIVE_MIGRATION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    migration_uri: str
    live_migration: bool
    reason: str
    def __init__(self, migration_uri: _Optional[str] = ..., live_migration: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class Disk(_message.Message):
    __slots__ = ("uri", "persistent", "format")
    URI_FIELD_NUMBER: _ClassVar[int]
    PERSISTENT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    uri: str
    persistent: bool
    format: str
    def __init__(self, uri: _Optional[str] = ..., persistent: _Optional[bool] = ..., format: _Optional[str] = ...) -> None: ...

class Nic(_message.Message):
    __slots__ = ("network_id", "mac", "ip")
    NETWORK_ID_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    network_id: int
    mac: str
    ip: str
    def __init__(self, network_id: _Optional[int] = ..., mac: _Optional[str] = ..., ip: _Optional[str] = ...) -> None: ...

class InstanceSpec(_message.Message):
    __slots__ = ("cores", "memory_mib", "disks", "nics", "hints", "group_name")
    class HintsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    NICS_FIELD_NUMBER: _ClassVar[int]
    HINTS_FIELD_NUMBER: _ClassVar[int]
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    cores: int
    memory_mib: int
    disks: _containers.RepeatedCompositeFieldContainer[Disk]
    nics: _containers.RepeatedCompositeFieldContainer[Nic]
    hints: _containers.ScalarMap[str, str]
    group_name: str
    def __init__(self, cores: _Optional[int] = ..., memory_mib: _Optional[int] = ..., disks: _Optional[_Iterable[_Union[Disk, _Mapping]]] = ..., nics: _Optional[_Iterable[_Union[Nic, _Mapping]]] = ..., hints: _Optional[_Mapping[str, str]] = ..., group_name: _Optional[str] = ...) -> None: ...

class InstanceStatus(_message.Message):
    __slots__ = ("state", "reason", "host_id", "host_name", "vm_id", "decayed", "nics", "migration_source_host_id", "migration_target_host_id", "suspend_image", "suspend_host_id", "charged_host_ids", "prior_state")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_NAME_FIELD_NUMBER: _ClassVar[int]
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    DECAYED_FIELD_NUMBER: _ClassVar[int]
    NICS_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_SOURCE_HOST_ID_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_TARGET_HOST_ID_FIELD_NUMBER: _ClassVar[int]
    SUSPEND_IMAGE_FIELD_NUMBER: _ClassVar[int]
    SUSPEND_HOST_ID_FIELD_NUMBER: _ClassVar[int]
    CHARGED_HOST_IDS_FIELD_NUMBER: _ClassVar[int]
    PRIOR_STATE_FIELD_NUMBER: _ClassVar[int]
    state: InstanceState
    reason: str
    host_id: int
    host_name: str
    vm_id: str
    decayed: bool
    nics: _containers.RepeatedCompositeFieldContainer[Nic]
    migration_source_host_id: int
    migration_target_host_id: int
    suspend_image: str
    suspend_host_id: int
    charged_host_ids: _containers.RepeatedScalarFieldContainer[int]
    prior_state: InstanceState
    def __init__(self, state: _Optional[_Union[InstanceState, str]] = ..., reason: _Optional[str] = ..., host_id: _Optional[int] = ..., host_name: _Optional[str] = ..., vm_id: _Optional[str] = ..., decayed: _Optional[bool] = ..., nics: _Optional[_Iterable[_Union[Nic, _Mapping]]] = ..., migration_source_host_id: _Optional[int] = ..., migration_target_host_id: _Optional[int] = ..., suspend_image: _Optional[str] = ..., suspend_host_id: _Optional[int] = ..., charged_host_ids: _Optional[_Iterable[int]] = ..., prior_state: _Optional[_Union[InstanceState, str]] = ...) -> None: ...

class Instance(_message.Message):
    __slots__ = ("id", "name", "owner", "spec", "status", "create_time", "update_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    owner: str
    spec: InstanceSpec
    status: InstanceStatus
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., owner: _Optional[str] = ..., spec: _Optional[_Union[InstanceSpec, _Mapping]] = ..., status: _Optional[_Union[InstanceStatus, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Network(_message.Message):
    __slots__ = ("id", "name", "default", "kind", "vlan_id", "vni", "group", "peers", "port", "mtu", "cidr")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VLAN_ID_FIELD_NUMBER: _ClassVar[int]
    VNI_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    CIDR_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    default: bool
    kind: NetworkKind
    vlan_id: int
    vni: int
    group: str
    peers: _containers.RepeatedScalarFieldContainer[str]
    port: int
    mtu: int
    cidr: str
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., default: _Optional[bool] = ..., kind: _Optional[_Union[NetworkKind, str]] = ..., vlan_id: _Optional[int] = ..., vni: _Optional[int] = ..., group: _Optional[str] = ..., peers: _Optional[_Iterable[str]] = ..., port: _Optional[int] = ..., mtu: _Optional[int] = ..., cidr: _Optional[str] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ("id", "name", "admin")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    admin: bool
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., admin: _Optional[bool] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("name", "size_bytes", "id", "format", "virtual_size_bytes", "backing", "owner", "in_use", "create_time", "state", "progress_percent", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    BACKING_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    IN_USE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    size_bytes: int
    id: int
    format: str
    virtual_size_bytes: int
    backing: str
    owner: str
    in_use: int
    create_time: _timestamp_pb2.Timestamp
    state: ImageState
    progress_percent: int
    reason: str
    def __init__(self, name: _Optional[str] = ..., size_bytes: _Optional[int] = ..., id: _Optional[int] = ..., format: _Optional[str] = ..., virtual_size_bytes: _Optional[int] = ..., backing: _Optional[str] = ..., owner: _Optional[str] = ..., in_use: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[ImageState, str]] = ..., progress_percent: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class StoredToken(_message.Message):
    __slots__ = ("id", "user", "secret_sha256", "create_time", "revoked")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SECRET_SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    id: int
    user: str
    secret_sha256: bytes
    create_time: _timestamp_pb2.Timestamp
    revoked: bool
    def __init__(self, id: _Optional[int] = ..., user: _Optional[str] = ..., secret_sha256: _Optional[bytes] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked: _Optional[bool] = ...) -> None: ...

class Reservation(_message.Message):
    __slots__ = ("host_id", "host_name", "users")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_NAME_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    host_id: int
    host_name: str
    users: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, host_id: _Optional[int] = ..., host_name: _Optional[str] = ..., users: _Optional[_Iterable[str]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("seq", "time", "type", "actor", "message", "host", "instance", "network", "user", "host_ids")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    HOST_IDS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: _timestamp_pb2.Timestamp
    type: EventType
    actor: str
    message: str
    host: Host
    instance: Instance
    network: Network
    user: User
    host_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., type: _Optional[_Union[EventType, str]] = ..., actor: _Optional[str] = ..., message: _Optional[str] = ..., host: _Optional[_Union[Host, _Mapping]] = ..., instance: _Optional[_Union[Instance, _Mapping]] = ..., network: _Optional[_Union[Network, _Mapping]] = ..., user: _Optional[_Union[User, _Mapping]] = ..., host_ids: _Optional[_Iterable[int]] = ...) -> None: ...
