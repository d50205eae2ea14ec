"""Who is calling.  For now the user name travels in request metadata;
authentication (TLS client certificates) will replace the source, not the callers."""

from __future__ import annotations

import grpc

USER_METADATA_KEY = "x-tashi-user"


def caller_name(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata():
        if key == USER_METADATA_KEY:
            return value if isinstance(value, str) else value.decode()
    return ""


def user_metadata(user: str) -> tuple[tuple[str, str], ...]:
    return ((USER_METADATA_KEY, user),)
