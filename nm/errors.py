"""Errors the node manager answers with; each names the gRPC status it maps to."""

from __future__ import annotations

import grpc


class NmError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
