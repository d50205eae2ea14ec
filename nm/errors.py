"""Errors the node manager answers with; each names the gRPC status it maps to.

They are the shared `ServiceError`, so the server's error interceptor answers
them like every other service's; the classes keep the driver's code terse."""

from __future__ import annotations

import grpc

from tashi.runtime.errors import ServiceError


class NmError(ServiceError):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(type(self).code, message)


class InvalidArgument(NmError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(NmError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(NmError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(NmError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(NmError):
    code = grpc.StatusCode.UNAVAILABLE


class HypervisorError(NmError):
    """libvirt or qemu-img refused; the message carries their words."""

    code = grpc.StatusCode.INTERNAL
