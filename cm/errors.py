"""Errors the cluster manager answers with: a gRPC status code and a message a person can act on."""

from __future__ import annotations

import grpc


class CMError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> CMError:
    return CMError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> CMError:
    return CMError(grpc.StatusCode.NOT_FOUND, message)


def precondition(message: str) -> CMError:
    return CMError(grpc.StatusCode.FAILED_PRECONDITION, message)


def denied(message: str) -> CMError:
    return CMError(grpc.StatusCode.PERMISSION_DENIED, message)


def exists(message: str) -> CMError:
    return CMError(grpc.StatusCode.ALREADY_EXISTS, message)
