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

class ImageTransferKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_TRANSFER_KIND_UNSPECIFIED: _ClassVar[ImageTransferKind]
    IMAGE_TRANSFER_KIND_UPLOAD: _ClassVar[ImageTransferKind]
    IMAGE_TRANSFER_KIND_DOWNLOAD: _ClassVar[ImageTransferKind]

class ResourceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESOURCE_KIND_UNSPECIFIED: _ClassVar[ResourceKind]
    RESOURCE_KIND_HOST: _ClassVar[ResourceKind]
    RESOURCE_KIND_INSTANCE: _ClassVar[ResourceKind]
    RESOURCE_KIND_NETWORK: _ClassVar[ResourceKind]
    RESOURCE_KIND_USER: _ClassVar[ResourceKind]
IMAGE_TRANSFER_KIND_UNSPECIFIED: ImageTransferKind
IMAGE_TRANSFER_KIND_UPLOAD: ImageTransferKind
IMAGE_TRANSFER_KIND_DOWNLOAD: ImageTransferKind
RESOURCE_KIND_UNSPECIFIED: ResourceKind
RESOURCE_KIND_HOST: ResourceKind
RESOURCE_KIND_INSTANCE: ResourceKind
RESOURCE_KIND_NETWORK: ResourceKind
RESOURCE_KIND_USER: ResourceKind

class InstanceRef(_message.Message):
    __slots__ = ("id", "name")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class HostRef(_message.Message):
    __slots__ = ("id", "name")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class CreateInstanceRequest(_message.Message):
    __slots__ = ("request_id", "instance", "count")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance: _resources_pb2.Instance
    count: int
    def __init__(self, request_id: _Optional[str] = ..., instance: _Optional[_Union[_resources_pb2.Instance, _Mapping]] = ..., count: _Optional[int] = ...) -> None: ...

class CreateInstanceResponse(_message.Message):
    __slots__ = ("instances",)
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Instance]
    def __init__(self, instances: _Optional[_Iterable[_Union[_resources_pb2.Instance, _Mapping]]] = ...) -> None: ...

class GetInstanceRequest(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: InstanceRef
    def __init__(self, instance: _Optional[_Union[InstanceRef, _Mapping]] = ...) -> None: ...

class GetInstanceResponse(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: _resources_pb2.Instance
    def __init__(self, instance: _Optional[_Union[_resources_pb2.Instance, _Mapping]] = ...) -> None: ...

class ListInstancesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "owner", "states", "host_id")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    owner: str
    states: _containers.RepeatedScalarFieldContainer[_resources_pb2.InstanceState]
    host_id: int
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., owner: _Optional[str] = ..., states: _Optional[_Iterable[_Union[_resources_pb2.InstanceState, str]]] = ..., host_id: _Optional[int] = ...) -> None: ...

class ListInstancesResponse(_message.Message):
    __slots__ = ("instances", "next_page_token", "seq")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Instance]
    next_page_token: str
    seq: int
    def __init__(self, instances: _Optional[_Iterable[_Union[_resources_pb2.Instance, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class DeleteInstanceRequest(_message.Message):
    __slots__ = ("request_id", "instance")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance: InstanceRef
    def __init__(self, request_id: _Optional[str] = ..., instance: _Optional[_Union[InstanceRef, _Mapping]] = ...) -> None: ...

class DeleteInstanceResponse(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: _resources_pb2.Instance
    def __init__(self, instance: _Optional[_Union[_resources_pb2.Instance, _Mapping]] = ...) -> None: ...

class ShutdownInstanceRequest(_message.Message):
    __slots__ = ("request_id", "instance")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance: InstanceRef
    def __init__(self, request_id: _Optional[str] = ..., instance: _Optional[_Union[InstanceRef, _Mapping]] = ...) -> None: ...

class ShutdownInstanceResponse(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: _resources_pb2.Instance
    def __init__(self, instance: _Optional[_Union[_resources_pb2.Instance, _Mapping]] = ...) -> None: ...

class PauseInstanceRequest(_message.Message):
    __slots__ = ("request_id", "instance")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance: InstanceRef
    def __init__(self, request_id: _Optional[str] = ..., instance: _Optional[_Union[InstanceRef, _Mapping]] = ...) -> None: ...

class PauseInstanceResponse(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: _resources_pb2.Instance
    def __init__(self, instance: _Optional[_Union[_resources_pb2.Instance, _Mapping]] = ...) -> None: ...

class UnpauseInstanceRequest(_message.Message):
    __slots__ = ("request_id", "instance")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance: InstanceRef
    def __init__(self, request_id: _Optional[str] = ..., instance: _Optional[_Union[InstanceRef, _Mapping]] = ...) -> None: ...

class UnpauseInstanceResponse(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: _resources_pb2.Instance
    def __init__(self, instance: _Optional[_Union[_resources_pb2.Instance, _Mapping]] = ...) -> None: ...

class SuspendInstanceRequest(_message.Message):
    __slots__ = ("request_id", "instance")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance: InstanceRef
    def __init__(self, request_id: _Optional[str] = ..., instance: _Optional[_Union[InstanceRef, _Mapping]] = ...) -> None: ...

class SuspendInstanceResponse(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: _resources_pb2.Instance
    def __init__(self, instance: _Optional[_Union[_resources_pb2.Instance, _Mapping]] = ...) -> None: ...

class ResumeInstanceRequest(_message.Message):
    __slots__ = ("request_id", "instance")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance: InstanceRef
    def __init__(self, request_id: _Optional[str] = ..., instance: _Optional[_Union[InstanceRef, _Mapping]] = ...) -> None: ...

class ResumeInstanceResponse(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: _resources_pb2.Instance
    def __init__(self, instance: _Optional[_Union[_resources_pb2.Instance, _Mapping]] = ...) -> None: ...

class MigrateInstanceRequest(_message.Message):
    __slots__ = ("request_id", "instance", "target_host")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_HOST_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance: InstanceRef
    target_host: HostRef
    def __init__(self, request_id: _Optional[str] = ..., instance: _Optional[_Union[InstanceRef, _Mapping]] = ..., target_host: _Optional[_Union[HostRef, _Mapping]] = ...) -> None: ...

class MigrateInstanceResponse(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: _resources_pb2.Instance
    def __init__(self, instance: _Optional[_Union[_resources_pb2.Instance, _Mapping]] = ...) -> None: ...

class CreateHostRequest(_message.Message):
    __slots__ = ("request_id", "name", "notes")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    name: str
    notes: str
    def __init__(self, request_id: _Optional[str] = ..., name: _Optional[str] = ..., notes: _Optional[str] = ...) -> None: ...

class CreateHostResponse(_message.Message):
    __slots__ = ("host",)
    HOST_FIELD_NUMBER: _ClassVar[int]
    host: _resources_pb2.Host
    def __init__(self, host: _Optional[_Union[_resources_pb2.Host, _Mapping]] = ...) -> None: ...

class DeleteHostRequest(_message.Message):
    __slots__ = ("request_id", "host")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    host: HostRef
    def __init__(self, request_id: _Optional[str] = ..., host: _Optional[_Union[HostRef, _Mapping]] = ...) -> None: ...

class DeleteHostResponse(_message.Message):
    __slots__ = ("host",)
    HOST_FIELD_NUMBER: _ClassVar[int]
    host: _resources_pb2.Host
    def __init__(self, host: _Optional[_Union[_resources_pb2.Host, _Mapping]] = ...) -> None: ...

class GetHostRequest(_message.Message):
    __slots__ = ("host",)
    HOST_FIELD_NUMBER: _ClassVar[int]
    host: HostRef
    def __init__(self, host: _Optional[_Union[HostRef, _Mapping]] = ...) -> None: ...

class GetHostResponse(_message.Message):
    __slots__ = ("host",)
    HOST_FIELD_NUMBER: _ClassVar[int]
    host: _resources_pb2.Host
    def __init__(self, host: _Optional[_Union[_resources_pb2.Host, _Mapping]] = ...) -> None: ...

class ListHostsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListHostsResponse(_message.Message):
    __slots__ = ("hosts", "next_page_token", "seq")
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Host]
    next_page_token: str
    seq: int
    def __init__(self, hosts: _Optional[_Iterable[_Union[_resources_pb2.Host, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class SetHostStateRequest(_message.Message):
    __slots__ = ("request_id", "host", "state")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    host: HostRef
    state: _resources_pb2.HostState
    def __init__(self, request_id: _Optional[str] = ..., host: _Optional[_Union[HostRef, _Mapping]] = ..., state: _Optional[_Union[_resources_pb2.HostState, str]] = ...) -> None: ...

class SetHostStateResponse(_message.Message):
    __slots__ = ("host",)
    HOST_FIELD_NUMBER: _ClassVar[int]
    host: _resources_pb2.Host
    def __init__(self, host: _Optional[_Union[_resources_pb2.Host, _Mapping]] = ...) -> None: ...

class EvacuateHostRequest(_message.Message):
    __slots__ = ("request_id", "host", "parallel")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    host: HostRef
    parallel: int
    def __init__(self, request_id: _Optional[str] = ..., host: _Optional[_Union[HostRef, _Mapping]] = ..., parallel: _Optional[int] = ...) -> None: ...

class Evacuation(_message.Message):
    __slots__ = ("instance_id", "instance_name", "target_host_id", "target_host_name", "reason")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_HOST_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_HOST_NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    instance_id: int
    instance_name: str
    target_host_id: int
    target_host_name: str
    reason: str
    def __init__(self, instance_id: _Optional[int] = ..., instance_name: _Optional[str] = ..., target_host_id: _Optional[int] = ..., target_host_name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class EvacuateHostResponse(_message.Message):
    __slots__ = ("host", "evacuations")
    HOST_FIELD_NUMBER: _ClassVar[int]
    EVACUATIONS_FIELD_NUMBER: _ClassVar[int]
    host: _resources_pb2.Host
    evacuations: _containers.RepeatedCompositeFieldContainer[Evacuation]
    def __init__(self, host: _Optional[_Union[_resources_pb2.Host, _Mapping]] = ..., evacuations: _Optional[_Iterable[_Union[Evacuation, _Mapping]]] = ...) -> None: ...

class SetHostNotesRequest(_message.Message):
    __slots__ = ("request_id", "host", "notes")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    host: HostRef
    notes: str
    def __init__(self, request_id: _Optional[str] = ..., host: _Optional[_Union[HostRef, _Mapping]] = ..., notes: _Optional[str] = ...) -> None: ...

class SetHostNotesResponse(_message.Message):
    __slots__ = ("host",)
    HOST_FIELD_NUMBER: _ClassVar[int]
    host: _resources_pb2.Host
    def __init__(self, host: _Optional[_Union[_resources_pb2.Host, _Mapping]] = ...) -> None: ...

class AddReservationRequest(_message.Message):
    __slots__ = ("request_id", "host", "user")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    host: HostRef
    user: str
    def __init__(self, request_id: _Optional[str] = ..., host: _Optional[_Union[HostRef, _Mapping]] = ..., user: _Optional[str] = ...) -> None: ...

class AddReservationResponse(_message.Message):
    __slots__ = ("reservation",)
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    reservation: _resources_pb2.Reservation
    def __init__(self, reservation: _Optional[_Union[_resources_pb2.Reservation, _Mapping]] = ...) -> None: ...

class RemoveReservationRequest(_message.Message):
    __slots__ = ("request_id", "host", "user")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    host: HostRef
    user: str
    def __init__(self, request_id: _Optional[str] = ..., host: _Optional[_Union[HostRef, _Mapping]] = ..., user: _Optional[str] = ...) -> None: ...

class RemoveReservationResponse(_message.Message):
    __slots__ = ("reservation",)
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    reservation: _resources_pb2.Reservation
    def __init__(self, reservation: _Optional[_Union[_resources_pb2.Reservation, _Mapping]] = ...) -> None: ...

class GetReservationRequest(_message.Message):
    __slots__ = ("host",)
    HOST_FIELD_NUMBER: _ClassVar[int]
    host: HostRef
    def __init__(self, host: _Optional[_Union[HostRef, _Mapping]] = ...) -> None: ...

class GetReservationResponse(_message.Message):
    __slots__ = ("reservation",)
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    reservation: _resources_pb2.Reservation
    def __init__(self, reservation: _Optional[_Union[_resources_pb2.Reservation, _Mapping]] = ...) -> None: ...

class CreateUserRequest(_message.Message):
    __slots__ = ("request_id", "name")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    name: str
    def __init__(self, request_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class CreateUserResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: _resources_pb2.User
    def __init__(self, user: _Optional[_Union[_resources_pb2.User, _Mapping]] = ...) -> None: ...

class TokenInfo(_message.Message):
    __slots__ = ("id", "user", "create_time", "revoked")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    id: int
    user: str
    create_time: _timestamp_pb2.Timestamp
    revoked: bool
    def __init__(self, id: _Optional[int] = ..., user: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked: _Optional[bool] = ...) -> None: ...

class IssueTokenRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: str
    def __init__(self, user: _Optional[str] = ...) -> None: ...

class IssueTokenResponse(_message.Message):
    __slots__ = ("token", "info")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    token: str
    info: TokenInfo
    def __init__(self, token: _Optional[str] = ..., info: _Optional[_Union[TokenInfo, _Mapping]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("id", "request_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    request_id: str
    def __init__(self, id: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: TokenInfo
    def __init__(self, token: _Optional[_Union[TokenInfo, _Mapping]] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: str
    def __init__(self, user: _Optional[str] = ...) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[TokenInfo]
    def __init__(self, tokens: _Optional[_Iterable[_Union[TokenInfo, _Mapping]]] = ...) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListUsersResponse(_message.Message):
    __slots__ = ("users", "next_page_token")
    USERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[_resources_pb2.User]
    next_page_token: str
    def __init__(self, users: _Optional[_Iterable[_Union[_resources_pb2.User, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CreateNetworkRequest(_message.Message):
    __slots__ = ("request_id", "network")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    network: _resources_pb2.Network
    def __init__(self, request_id: _Optional[str] = ..., network: _Optional[_Union[_resources_pb2.Network, _Mapping]] = ...) -> None: ...

class CreateNetworkResponse(_message.Message):
    __slots__ = ("network",)
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    network: _resources_pb2.Network
    def __init__(self, network: _Optional[_Union[_resources_pb2.Network, _Mapping]] = ...) -> None: ...

class DeleteNetworkRequest(_message.Message):
    __slots__ = ("request_id", "network_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NETWORK_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    network_id: int
    def __init__(self, request_id: _Optional[str] = ..., network_id: _Optional[int] = ...) -> None: ...

class DeleteNetworkResponse(_message.Message):
    __slots__ = ("network",)
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    network: _resources_pb2.Network
    def __init__(self, network: _Optional[_Union[_resources_pb2.Network, _Mapping]] = ...) -> None: ...

class ListNetworksRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListNetworksResponse(_message.Message):
    __slots__ = ("networks", "next_page_token", "seq")
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    networks: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Network]
    next_page_token: str
    seq: int
    def __init__(self, networks: _Optional[_Iterable[_Union[_resources_pb2.Network, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class ListImagesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListImagesResponse(_message.Message):
    __slots__ = ("images", "next_page_token")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Image]
    next_page_token: str
    def __init__(self, images: _Optional[_Iterable[_Union[_resources_pb2.Image, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AddImageRequest(_message.Message):
    __slots__ = ("request_id", "name", "owner")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    name: str
    owner: str
    def __init__(self, request_id: _Optional[str] = ..., name: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class AddImageResponse(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: _resources_pb2.Image
    def __init__(self, image: _Optional[_Union[_resources_pb2.Image, _Mapping]] = ...) -> None: ...

class CopyImageRequest(_message.Message):
    __slots__ = ("request_id", "src", "dst")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SRC_FIELD_NUMBER: _ClassVar[int]
    DST_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    src: str
    dst: str
    def __init__(self, request_id: _Optional[str] = ..., src: _Optional[str] = ..., dst: _Optional[str] = ...) -> None: ...

class CopyImageResponse(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: _resources_pb2.Image
    def __init__(self, image: _Optional[_Union[_resources_pb2.Image, _Mapping]] = ...) -> None: ...

class CloneImageRequest(_message.Message):
    __slots__ = ("request_id", "src", "dst")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SRC_FIELD_NUMBER: _ClassVar[int]
    DST_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    src: str
    dst: str
    def __init__(self, request_id: _Optional[str] = ..., src: _Optional[str] = ..., dst: _Optional[str] = ...) -> None: ...

class CloneImageResponse(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: _resources_pb2.Image
    def __init__(self, image: _Optional[_Union[_resources_pb2.Image, _Mapping]] = ...) -> None: ...

class RebaseImageRequest(_message.Message):
    __slots__ = ("request_id", "image", "backing")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    BACKING_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    image: str
    backing: str
    def __init__(self, request_id: _Optional[str] = ..., image: _Optional[str] = ..., backing: _Optional[str] = ...) -> None: ...

class RebaseImageResponse(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: _resources_pb2.Image
    def __init__(self, image: _Optional[_Union[_resources_pb2.Image, _Mapping]] = ...) -> None: ...

class DeleteImageRequest(_message.Message):
    __slots__ = ("request_id", "name")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    name: str
    def __init__(self, request_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DeleteImageResponse(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: _resources_pb2.Image
    def __init__(self, image: _Optional[_Union[_resources_pb2.Image, _Mapping]] = ...) -> None: ...

class UploadImageHeader(_message.Message):
    __slots__ = ("name", "size_bytes", "sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    size_bytes: int
    sha256: str
    def __init__(self, name: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class UploadImageRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadImageHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadImageHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadImageResponse(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: _resources_pb2.Image
    def __init__(self, image: _Optional[_Union[_resources_pb2.Image, _Mapping]] = ...) -> None: ...

class DownloadImageRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DownloadImageResponse(_message.Message):
    __slots__ = ("size_bytes", "chunk", "sha256")
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    size_bytes: int
    chunk: bytes
    sha256: str
    def __init__(self, size_bytes: _Optional[int] = ..., chunk: _Optional[bytes] = ..., sha256: _Optional[str] = ...) -> None: ...

class OpenImageTransferRequest(_message.Message):
    __slots__ = ("kind", "name", "size_bytes")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    kind: ImageTransferKind
    name: str
    size_bytes: int
    def __init__(self, kind: _Optional[_Union[ImageTransferKind, str]] = ..., name: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class OpenImageTransferResponse(_message.Message):
    __slots__ = ("port", "ticket", "expires_in_seconds")
    PORT_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    port: int
    ticket: str
    expires_in_seconds: int
    def __init__(self, port: _Optional[int] = ..., ticket: _Optional[str] = ..., expires_in_seconds: _Optional[int] = ...) -> None: ...

class ImageTransferResult(_message.Message):
    __slots__ = ("code", "message", "image")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    image: _resources_pb2.Image
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., image: _Optional[_Union[_resources_pb2.Image, _Mapping]] = ...) -> None: ...

class ReadConsoleRequest(_message.Message):
    __slots__ = ("instance", "follow", "tail_bytes")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_BYTES_FIELD_NUMBER: _ClassVar[int]
    instance: InstanceRef
    follow: bool
    tail_bytes: int
    def __init__(self, instance: _Optional[_Union[InstanceRef, _Mapping]] = ..., follow: _Optional[bool] = ..., tail_bytes: _Optional[int] = ...) -> None: ...

class ReadConsoleResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class AttachConsoleRequest(_message.Message):
    __slots__ = ("instance", "data")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    instance: InstanceRef
    data: bytes
    def __init__(self, instance: _Optional[_Union[InstanceRef, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class AttachConsoleResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("since", "max_batch", "kinds", "host")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    since: int
    max_batch: int
    kinds: _containers.RepeatedScalarFieldContainer[ResourceKind]
    host: HostRef
    def __init__(self, since: _Optional[int] = ..., max_batch: _Optional[int] = ..., kinds: _Optional[_Iterable[_Union[ResourceKind, str]]] = ..., host: _Optional[_Union[HostRef, _Mapping]] = ...) -> None: ...

class WatchEventsResponse(_message.Message):
    __slots__ = ("events", "seq")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Event]
    seq: int
    def __init__(self, events: _Optional[_Iterable[_Union[_resources_pb2.Event, _Mapping]]] = ..., seq: _Optional[int] = ...) -> None: ...
