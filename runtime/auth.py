"""Who is calling.

Over mutual TLS the caller is the subject of its client certificate, which
the site CA signed: CN the name, OU the kind (user, node, service; see
`tashi.runtime.certs`).  Nothing the caller sends can change that; the
`x-tashi-user` header is ignored.

Only a server started without TLS (loopback, or `--insecure`) takes the
header's word: that is the single-box development mode, and such a
principal is marked unverified.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import grpc

from tashi.runtime.certs import identity_of
from tashi.runtime.errors import unauthenticated

USER_METADATA_KEY = "x-tashi-user"


@dataclass(frozen=True)
class Principal:
    kind: str  # "user", "node" or "service"
    name: str
    # False when the name is only what a plaintext caller claimed.
    verified: bool = False
    # sha256 of the client certificate, to tell two certificates of one name apart.
    fingerprint: str = ""

    def __str__(self) -> str:
        """The actor as the services record it: users by name, others by kind:name
        (user names cannot hold ':', so the two never collide)."""
        return self.name if self.kind == "user" else f"{self.kind}:{self.name}"


def principal(context: grpc.ServicerContext) -> Principal:
    """The caller of this call, from its certificate (TLS) or its header (plaintext)."""
    auth = context.auth_context()
    pems = auth.get("x509_pem_cert")
    if pems:
        try:
            kind, name = identity_of(pems[0])
        except ValueError as exc:
            raise unauthenticated(f"the client certificate names no Tashi identity: {exc}") \
                from None
        return Principal(kind, name, True, hashlib.sha256(pems[0]).hexdigest())
    if auth.get("transport_security_type") == [b"ssl"]:
        raise unauthenticated("a client certificate is required")
    for key, value in context.invocation_metadata():
        if key == USER_METADATA_KEY:
            return Principal("user", value if isinstance(value, str) else value.decode())
    return Principal("user", "")


def caller_name(context: grpc.ServicerContext) -> str:
    return str(principal(context))


def user_metadata(user: str) -> tuple[tuple[str, str], ...]:
    """What a plaintext client says about itself (ignored by servers with TLS)."""
    return ((USER_METADATA_KEY, user),)
