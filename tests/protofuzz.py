"""Hypothesis strategies over Tashi's protobuf surface: any request message of
any RPC, with edge values, mutated fields, and raw random bytes, plus a way
to send each to a live server.  Used by tests/e2e/test_fuzz.py (bounded, in
CI) and bench/bench_fuzz.py (long, seeded)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

from tashi.runtime.auth import user_metadata
from tashi.v1 import (
    accounting_pb2,
    cluster_manager_pb2,
    node_manager_pb2,
    node_registry_pb2,
    placement_pb2,
)

F = FieldDescriptor
EDGE_INTS = [0, 1, -1, 2, 7, 77, 2**31 - 1, -(2**31), 2**53, 2**62, 2**63 - 1, -(2**63)]
# No routable address among them: what the fuzzer sends must never make a
# server connect anywhere but loopback.
EDGE_TEXT = ["", "a", "root", "alice", "h1", "..", "../../etc/shadow", "/etc/passwd",
             "base.qcow2", "x" * 64, "\x00", "é", "a b", "127.0.0.1", "test:///etc/shadow",
             "56:00:00:00:01:00", "0", "-1", "__migrate_target", "10.1.0.0/24"]


def _int(bits: int, signed: bool) -> st.SearchStrategy[int]:
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    edges = [v for v in EDGE_INTS if lo <= v <= hi]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi), st.integers(-3, 20).filter(
        lambda v: lo <= v <= hi))


SCALARS: dict[int, Callable[[], st.SearchStrategy[Any]]] = {
    F.TYPE_INT32: lambda: _int(32, True), F.TYPE_SINT32: lambda: _int(32, True),
    F.TYPE_SFIXED32: lambda: _int(32, True), F.TYPE_INT64: lambda: _int(64, True),
    F.TYPE_SINT64: lambda: _int(64, True), F.TYPE_SFIXED64: lambda: _int(64, True),
    F.TYPE_UINT32: lambda: _int(32, False), F.TYPE_FIXED32: lambda: _int(32, False),
    F.TYPE_UINT64: lambda: _int(64, False), F.TYPE_FIXED64: lambda: _int(64, False),
    F.TYPE_BOOL: st.booleans,
    F.TYPE_DOUBLE: lambda: st.floats(allow_nan=True, allow_infinity=True),
    F.TYPE_FLOAT: lambda: st.floats(width=32, allow_nan=True, allow_infinity=True),
    F.TYPE_STRING: lambda: st.one_of(st.sampled_from(EDGE_TEXT), st.text(max_size=80),
                                     st.just("y" * 5000)),
    F.TYPE_BYTES: lambda: st.binary(max_size=64),
}


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == F.TYPE_MESSAGE:
        return messages(field.message_type, depth + 1)
    if field.type == F.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), st.integers(-5, 40))
    return SCALARS[field.type]()


@st.composite
def _message(draw: st.DrawFn, desc: Descriptor, depth: int) -> Message:
    msg = GetMessageClass(desc)()
    if desc.full_name == "google.protobuf.Timestamp":
        msg.seconds = draw(st.integers(-62135596800, 253402300799))  # type: ignore[attr-defined]
        msg.nanos = draw(st.integers(0, 999_999_999))  # type: ignore[attr-defined]
        return msg
    for field in desc.fields:
        if depth > 3 or not draw(st.booleans()):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_f, val_f = field.message_type.fields_by_name["key"], \
                field.message_type.fields_by_name["value"]
            entries = draw(st.dictionaries(_value(key_f, depth), _value(val_f, depth),
                                           max_size=4))
            target = getattr(msg, field.name)
            for k, v in entries.items():
                if val_f.type == F.TYPE_MESSAGE:
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
        elif field.is_repeated:
            items = draw(st.lists(_value(field, depth), max_size=4))
            target = getattr(msg, field.name)
            if field.type == F.TYPE_MESSAGE:
                for item in items:
                    target.add().CopyFrom(item)
            else:
                target.extend(items)
        elif field.type == F.TYPE_MESSAGE:
            getattr(msg, field.name).CopyFrom(draw(_value(field, depth)))
        else:
            setattr(msg, field.name, draw(_value(field, depth)))
    return msg


def messages(desc: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    return _message(desc, depth)


@dataclass(frozen=True)
class Rpc:
    service: str
    method: MethodDescriptor

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.method.name}"

    @property
    def streaming(self) -> bool:
        return bool(self.method.server_streaming)

    def __str__(self) -> str:
        return self.path


def rpcs(*modules: Any) -> list[Rpc]:
    out = []
    for module in modules:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                out.append(Rpc(service.full_name, method))
    return sorted(out, key=str)


CM_RPCS = rpcs(cluster_manager_pb2, node_registry_pb2, placement_pb2)
NM_RPCS = rpcs(node_manager_pb2)
ACCOUNTING_RPCS = rpcs(accounting_pb2)


@st.composite
def calls(draw: st.DrawFn, surface: list[Rpc]) -> tuple[Rpc, bytes]:
    """An RPC and its request bytes: a generated message, or (one time in eight)
    raw random bytes that may not decode at all."""
    rpc = draw(st.sampled_from(surface))
    if draw(st.integers(0, 7)) == 0:
        return rpc, draw(st.binary(max_size=200))
    return rpc, draw(messages(rpc.method.input_type)).SerializeToString()


def send(channel: grpc.Channel, rpc: Rpc, body: bytes, user: str,
         timeout: float = 5.0) -> grpc.StatusCode:
    """Send raw request bytes; the status code the server answered (streams: the
    first message or the end)."""
    metadata = user_metadata(user)
    ident = lambda b: b  # noqa: E731
    try:
        if rpc.streaming:  # a quiet watch waits: the first message or a short deadline
            call = channel.unary_stream(rpc.path, request_serializer=ident,
                                        response_deserializer=ident)(
                body, timeout=min(timeout, 1.5), metadata=metadata)
            try:
                next(call)
            except StopIteration:
                pass
            finally:
                call.cancel()
            return grpc.StatusCode.OK
        channel.unary_unary(rpc.path, request_serializer=ident, response_deserializer=ident)(
            body, timeout=timeout, metadata=metadata)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code = exc.code()  # type: ignore[attr-defined]
        if code == grpc.StatusCode.CANCELLED or (
                rpc.streaming and code == grpc.StatusCode.DEADLINE_EXCEEDED):
            return grpc.StatusCode.OK
        return code
