"""Who is calling.

Over mutual TLS the caller is the subject of its client certificate, which
the site CA signed: CN the name, OU the kind (user, node, service; see
`tashi.runtime.certs`).  Nothing the caller sends can change that; the
`x-tashi-user` header is ignored.

A user without a certificate may send a bearer token an admin issued
(`authorization: Bearer tashi_...`); the server that knows tokens (the
CM's) resolves it to its user.  A certificate, when there is one, wins.

Only a server started without TLS (loopback, or `--insecure`) takes the
header's word: that is the single-box development mode, and such a
principal is marked unverified.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

import grpc

from tashi.runtime.certs import identity_of
from tashi.runtime.errors import unauthenticated

USER_METADATA_KEY = "x-tashi-user"
TOKEN_METADATA_KEY = "authorization"

# A token's user, or None (unknown, revoked, malformed).
TokenResolver = Callable[[str], "str | None"]


# How nodes and services are written as actors (users by their bare name,
# which cannot hold ':'), so the services need only the string.
NODE_PREFIX = "node:"
SERVICE_PREFIX = "service:"


def is_system(actor: str) -> bool:
    """A node or a service, not a user."""
    return actor.startswith((SERVICE_PREFIX, NODE_PREFIX))


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
        prefix = {"node": NODE_PREFIX, "service": SERVICE_PREFIX}.get(self.kind, "")
        return prefix + self.name


# The caller of the call this thread serves, set by the server's gate.
CURRENT: ContextVar[Principal | None] = ContextVar("tashi_principal", default=None)


def principal(context: grpc.ServicerContext, tokens: TokenResolver | None = None) -> Principal:
    """The caller of this call: its certificate, else its bearer token, else (a
    plaintext server) its header.  The gate's answer when the gate ran."""
    known = CURRENT.get()
    if known is not None:
        return known
    auth = context.auth_context()
    pems = auth.get("x509_pem_cert")
    if pems:
        try:
            kind, name = identity_of(pems[0])
        except ValueError as exc:
            raise unauthenticated(f"the client certificate names no Tashi identity: {exc}") \
                from None
        return Principal(kind, name, True, hashlib.sha256(pems[0]).hexdigest())
    metadata = {k: v if isinstance(v, str) else v.decode()
                for k, v in context.invocation_metadata()}
    bearer = metadata.get(TOKEN_METADATA_KEY, "")
    if bearer:
        scheme, _, token = bearer.partition(" ")
        if scheme.lower() != "bearer" or tokens is None:
            raise unauthenticated("this service takes a client certificate, not a token")
        user = tokens(token.strip())
        if user is None:
            raise unauthenticated("the token is unknown, revoked or malformed")
        return Principal("user", user, True, "token")
    if auth.get("transport_security_type") == [b"ssl"]:
        raise unauthenticated("a client certificate or a bearer token is required")
    return Principal("user", metadata.get(USER_METADATA_KEY, ""))


def caller_name(context: grpc.ServicerContext) -> str:
    return str(principal(context))


def user_metadata(user: str, token: str = "") -> tuple[tuple[str, str], ...]:
    """What a client sends about itself: the name (heeded by plaintext servers
    only) and its bearer token if it has one."""
    if token:
        return ((USER_METADATA_KEY, user), (TOKEN_METADATA_KEY, f"Bearer {token}"))
    return ((USER_METADATA_KEY, user),)
