"""Who may call what: the one table every server checks before a handler runs.

The gate here is by the caller's kind and service name, per RPC; what
depends on the cluster's state (is this user an admin, does this instance
belong to the caller, is this node reporting for its own host) is decided
by the service itself, with the same `Principal`.

- users: the cluster manager's user API and accounting (admins are users);
  they may also register hosts and place instances, which the CM allows
  admins only (tools and tests speak for synthetic hosts that way).
- nodes (a host's node manager): the node registry, and the listings and
  watch the node manager needs (networks); never a user's API.
- services: the scheduler places and reads; accounting reads and watches;
  the cluster manager alone calls node managers.
- health and reflection: every caller that got through the TLS handshake.

A principal that is not verified (plaintext, loopback development mode)
passes the gate; the services still check what its name may do.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from tashi.runtime.auth import Principal, TokenResolver, principal
from tashi.runtime.errors import denied

CM_SERVICE = "tashi-cm"
SCHEDULER_SERVICE = "tashi-scheduler"
ACCOUNTING_SERVICE = "tashi-accounting"

Rule = Callable[[Principal], bool]


def kinds(*allowed: str) -> Rule:
    return lambda who: who.kind in allowed


def services(*names: str) -> Rule:
    return lambda who: who.kind == "service" and who.name in names


def either(*rules: Rule) -> Rule:
    return lambda who: any(rule(who) for rule in rules)


ANYONE: Rule = lambda who: True  # noqa: E731
USERS = kinds("user")
READERS = either(USERS, services(SCHEDULER_SERVICE, ACCOUNTING_SERVICE))

CM = "tashi.v1.ClusterManagerService/"
# The most specific entry wins: a method, else its service.
RULES: dict[str, Rule] = {
    "grpc.health.v1.Health/": ANYONE,
    "grpc.reflection.v1alpha.ServerReflection/": ANYONE,
    "grpc.reflection.v1.ServerReflection/": ANYONE,
    CM: USERS,
    CM + "GetInstance": READERS,
    CM + "ListInstances": READERS,
    CM + "GetHost": READERS,
    CM + "ListHosts": READERS,
    CM + "ListUsers": READERS,
    CM + "ListNetworks": either(READERS, kinds("node")),
    CM + "WatchEvents": either(READERS, kinds("node")),
    "tashi.v1.NodeRegistryService/": kinds("node", "user"),
    # The CM's liveness process; a beat's token is what ties it to one host.
    "tashi.v1.LivenessService/": kinds("node", "user"),
    "tashi.v1.PlacementService/": either(USERS, services(SCHEDULER_SERVICE)),
    "tashi.v1.NodeManagerService/": services(CM_SERVICE),
    "tashi.v1.AccountingService/": USERS,
}


def rule_for(method: str) -> Rule | None:
    """`method` is gRPC's '/package.Service/Method'."""
    path = method.lstrip("/")
    service = path.split("/", 1)[0] + "/"
    return RULES.get(path, RULES.get(service))


def authorize(method: str, context: grpc.ServicerContext,
              tokens: TokenResolver | None = None) -> Principal:
    """The caller, if the table lets it call `method`; PERMISSION_DENIED otherwise."""
    who = principal(context, tokens)
    if not who.verified:
        return who
    rule = rule_for(method)
    if rule is None or not rule(who):
        raise denied(f"{who.kind} {who.name!r} may not call {method.lstrip('/')}")
    return who
