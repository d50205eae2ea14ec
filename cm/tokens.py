"""Bearer tokens: an admin issues one to a user; the CM keeps only its hash.

A token reads `tashi_<id>_<secret>`: the id finds the stored hash, the
secret (32 random bytes) is compared by its SHA-256 in constant time.  The
answer that shows a token is never stored (IssueToken takes no request id),
and tokens never travel in events.  A revoked token stops at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from tashi.cm.cluster import Cluster
from tashi.cm.txn import Txn
from tashi.runtime.errors import denied, not_found
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb

PREFIX = "tashi_"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def info(token: pb.StoredToken) -> cmpb.TokenInfo:
    return cmpb.TokenInfo(id=token.id, user=token.user, create_time=token.create_time,
                          revoked=token.revoked)


def issue(c: Cluster, actor: str, req: cmpb.IssueTokenRequest) -> cmpb.IssueTokenResponse:
    secret = secrets.token_urlsafe(32)

    def body(txn: Txn) -> cmpb.IssueTokenResponse:
        c.require_admin(actor, "issue tokens")
        if req.user not in c.user_ids:
            raise not_found(f"no user named {req.user!r}")
        stored = pb.StoredToken(id=c.next_id(txn, "token"), user=req.user,
                                secret_sha256=_digest(secret))
        stored.create_time.GetCurrentTime()
        txn.put_quiet("token", stored.id, stored)
        return cmpb.IssueTokenResponse(token=f"{PREFIX}{stored.id}_{secret}", info=info(stored))

    return c.mutate(actor, "", "IssueToken", cmpb.IssueTokenResponse, body)


def revoke(c: Cluster, actor: str, req: cmpb.RevokeTokenRequest) -> cmpb.RevokeTokenResponse:
    def body(txn: Txn) -> cmpb.RevokeTokenResponse:
        c.user(actor)
        token = c.tokens.get(req.id)
        if token is None:
            raise not_found(f"no token {req.id}")
        if token.user != actor and not c.is_admin(actor):
            raise denied(f"token {req.id} is not {actor!r}'s")
        new = pb.StoredToken()
        new.CopyFrom(token)
        new.revoked = True
        txn.put_quiet("token", new.id, new)
        return cmpb.RevokeTokenResponse(token=info(new))

    return c.mutate(actor, req.request_id, "RevokeToken", cmpb.RevokeTokenResponse, body)


def listing(c: Cluster, actor: str, req: cmpb.ListTokensRequest) -> cmpb.ListTokensResponse:
    with c.lock:
        c.user(actor)
        admin = c.is_admin(actor)
        if req.user and req.user != actor and not admin:
            raise denied(f"{actor!r} may list only their own tokens")
        who = req.user or ("" if admin else actor)
        return cmpb.ListTokensResponse(tokens=[
            info(t) for _id, t in sorted(c.tokens.items()) if not who or t.user == who])


def resolve(c: Cluster, token: str) -> str | None:
    """The user a token speaks for, or None (malformed, unknown, revoked, wrong secret)."""
    head, _, secret = token.partition("_")[2].partition("_")
    if not token.startswith(PREFIX) or not head.isdigit() or not secret:
        return None
    stored = c.tokens.get(int(head))
    if stored is None or stored.revoked:
        return None
    if not hmac.compare_digest(stored.secret_sha256, _digest(secret)):
        return None
    if stored.user not in c.user_ids:
        return None
    return stored.user

