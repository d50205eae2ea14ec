"""Hosts, users, networks, images and reservations (tashi-admin's commands, and the getters)."""

from __future__ import annotations

import argparse
import sys
import time

from tashi.cli.context import Context, UsageError
from tashi.cli.render import to_dict
from tashi.runtime.names import HOST_STATES_BY_NAME
from tashi.v1 import resources_pb2 as pb

HOST_COLUMNS = ["id", "name", "up", "decayed", "state", "cores", "memory_mib", "used_cores",
                "used_memory_mib", "instance_count", "version", "notes", "reserved_for"]
USER_COLUMNS = ["id", "name", "admin"]
NETWORK_COLUMNS = ["id", "name", "kind", "default", "vlan_id", "vni", "mtu", "cidr"]
IMAGE_COLUMNS = ["name", "format", "virtual_size_bytes", "size_bytes", "backing", "owner",
                 "in_use", "state"]
RESERVATION_COLUMNS = ["host_id", "host_name", "users"]
KINDS = {"vlan": pb.NETWORK_KIND_VLAN, "vxlan": pb.NETWORK_KIND_VXLAN,
         "flat": pb.NETWORK_KIND_FLAT}


def get_hosts(ctx: Context) -> int:
    ctx.output(ctx.client().list_hosts(), HOST_COLUMNS)
    return 0


def get_users(ctx: Context) -> int:
    ctx.output(ctx.client().list_users(), USER_COLUMNS)
    return 0


def get_networks(ctx: Context) -> int:
    client = ctx.client()
    nets = client.list_networks()
    hosts = client.list_hosts()
    rows = []
    for net in nets:
        row = to_dict(net)
        status = []
        for h in hosts:
            for s in h.networks:
                if s.network_id == net.id:
                    status.append(f"{h.name}:" + ("ready" if s.ready else f"down ({s.reason})"))
        row["hosts"] = status
        rows.append(row)
    ctx.output(rows, NETWORK_COLUMNS + ["hosts"])
    return 0


IMAGE_STATES = {pb.IMAGE_STATE_READY: "ready", pb.IMAGE_STATE_COPYING: "copying",
                pb.IMAGE_STATE_FAILED: "failed"}


def image_rows(ctx: Context, imgs: list[pb.Image]) -> list[dict[str, object]]:
    """Images as rows: state as a word (a file never recorded has none; records
    from before images had states are ready), in a table with its progress."""
    rows = []
    for img in imgs:
        row = to_dict(img)
        state = IMAGE_STATES.get(img.state, "ready" if img.id else "")
        if img.state == pb.IMAGE_STATE_COPYING and ctx.args.output in ("table", "csv"):
            state += f" {img.progress_percent}%"
        row["state"] = state
        rows.append(row)
    return rows


def get_images(ctx: Context) -> int:
    ctx.output(image_rows(ctx, ctx.client().list_images()), IMAGE_COLUMNS)
    return 0


def add_image(ctx: Context) -> int:
    img = ctx.client().add_image(ctx.args.name, ctx.args.owner or "")
    ctx.output(image_rows(ctx, [img]), IMAGE_COLUMNS)
    return 0


def add_user(ctx: Context) -> int:
    """Add the user and issue their first bearer token, shown this once."""
    client = ctx.client()
    user = client.create_user(ctx.args.name)
    token = client.issue_token(user.name)
    ctx.output([user], [*USER_COLUMNS, "token"], extra={"token": token.token})
    ctx.err(f"the token is shown once: {user.name} keeps it in ~/.config/tashi/token "
            "(mode 600) or TASHI_TOKEN; `tashi revokeToken --id "
            f"{token.info.id}` ends it")
    return 0


TOKEN_COLUMNS = ["id", "user", "create_time", "revoked"]


def issue_token(ctx: Context) -> int:
    token = ctx.client().issue_token(ctx.args.user)
    ctx.output([token.info], [*TOKEN_COLUMNS, "token"], extra={"token": token.token})
    return 0


def revoke_token(ctx: Context) -> int:
    ctx.output([ctx.client().revoke_token(ctx.args.id)], TOKEN_COLUMNS)
    return 0


def get_tokens(ctx: Context) -> int:
    ctx.output(ctx.client().list_tokens(ctx.args.user or ""), TOKEN_COLUMNS)
    return 0


def add_host(ctx: Context) -> int:
    ctx.output([ctx.client().create_host(ctx.args.name, ctx.args.notes or "")], HOST_COLUMNS)
    return 0


def del_host(ctx: Context) -> int:
    ctx.output([ctx.client().delete_host(ctx.args.host)], HOST_COLUMNS)
    return 0


def set_host_state(ctx: Context) -> int:
    state = HOST_STATES_BY_NAME.get(ctx.args.state.lower())
    if state not in (pb.HOST_STATE_NORMAL, pb.HOST_STATE_DRAINED):
        raise UsageError("--state is normal or drained")
    ctx.output([ctx.client().set_host_state(ctx.args.host, state)], HOST_COLUMNS)
    return 0


EVACUATION_COLUMNS = ["instance_id", "instance_name", "target_host_name", "reason"]
MIGRATING = (pb.INSTANCE_STATE_MIGRATE_PREP, pb.INSTANCE_STATE_MIGRATE_TRANS)


def evacuate_host(ctx: Context) -> int:
    """Drain the host and move its running VMs off; show the plan, then progress
    until no migration from it is under way, then what is left on it and why."""
    client = ctx.client()
    resp = client.evacuate_host(ctx.args.host, ctx.args.parallel or 0)
    ctx.output(list(resp.evacuations), EVACUATION_COLUMNS)
    if ctx.args.no_wait or not resp.evacuations:
        return 0
    host = resp.host
    deadline = time.monotonic() + ctx.args.wait
    idle, last = 0, ""
    while time.monotonic() < deadline and idle < 3:
        time.sleep(1.0)
        insts = client.list_instances()
        moving = [i for i in insts if i.status.state in MIGRATING
                  and i.status.migration_source_host_id == host.id]
        left = [i for i in insts if i.status.host_id == host.id and i not in moving]
        line = f"evacuating {host.name}: {len(moving)} migrating, {len(left)} on it"
        if line != last:
            sys.stderr.write(line + "\n")
            last = line
        idle = idle + 1 if not moving else 0
    left = [i for i in client.list_instances()
            if i.status.host_id == host.id or i.status.suspend_host_id == host.id]
    if left:
        sys.stderr.write(f"left on {host.name} ({len(left)}):\n")
        ctx.output(left, ["id", "name", "state", "state_reason"])
    return 1 if any(i.status.state in MIGRATING for i in left) else 0


def set_host_notes(ctx: Context) -> int:
    ctx.output([ctx.client().set_host_notes(ctx.args.host, ctx.args.notes)], HOST_COLUMNS)
    return 0


def add_reservation(ctx: Context) -> int:
    res = ctx.client().add_reservation(ctx.args.host, ctx.args.user_name)
    ctx.output([res], RESERVATION_COLUMNS)
    return 0


def del_reservation(ctx: Context) -> int:
    res = ctx.client().remove_reservation(ctx.args.host, ctx.args.user_name)
    ctx.output([res], RESERVATION_COLUMNS)
    return 0


def get_reservation(ctx: Context) -> int:
    ctx.output([ctx.client().get_reservation(ctx.args.host)], RESERVATION_COLUMNS)
    return 0


def add_network(ctx: Context) -> int:
    a = ctx.args
    net = pb.Network(id=a.id, name=a.name, default=a.default, mtu=a.mtu or 0, cidr=a.cidr or "")
    if a.vlan is not None:
        net.kind, net.vlan_id = pb.NETWORK_KIND_VLAN, a.vlan
    elif a.vxlan is not None:
        net.kind, net.vni = pb.NETWORK_KIND_VXLAN, a.vxlan
        net.group = a.group or ""
        net.peers.extend(p for p in (a.peers or "").split(",") if p)
        net.port = a.port or 0
    else:
        net.kind = pb.NETWORK_KIND_FLAT
    if (a.group or a.peers) and a.vxlan is None:
        raise UsageError("--group and --peers go with --vxlan")
    ctx.output([ctx.client().create_network(net)], NETWORK_COLUMNS)
    return 0


def del_network(ctx: Context) -> int:
    ctx.output([ctx.client().delete_network(ctx.args.id)], NETWORK_COLUMNS)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for cmd, func, text in (("getHosts", get_hosts, "list hosts"),
                            ("getUsers", get_users, "list users"),
                            ("getNetworks", get_networks, "list networks, with per-host status"),
                            ("getImages", get_images, "list the image store")):
        sub.add_parser(cmd, help=text).set_defaults(func=func)

    p = sub.add_parser("addImage", help="admin: record a file placed in the image store "
                       "(format detected now) and its owner")
    p.add_argument("--name", required=True, help="path inside the image store")
    p.add_argument("--owner", help="user who may use it as a persistent disk")
    p.set_defaults(func=add_image)

    p = sub.add_parser("addUser", help="admin: add a user")
    p.add_argument("--name", required=True)
    p.set_defaults(func=add_user)

    p = sub.add_parser("issueToken", help="admin: a new bearer token for a user (shown once)")
    p.add_argument("--user", required=True)
    p.set_defaults(func=issue_token)

    p = sub.add_parser("revokeToken", help="end a bearer token at once (admins, or its user)")
    p.add_argument("--id", type=int, required=True)
    p.set_defaults(func=revoke_token)

    p = sub.add_parser("getTokens", help="bearer tokens (never their secrets)")
    p.add_argument("--user", help="only this user's (admins)")
    p.set_defaults(func=get_tokens)

    p = sub.add_parser("addHost", help="admin: add a host so its node manager may join")
    p.add_argument("--name", required=True)
    p.add_argument("--notes")
    p.set_defaults(func=add_host)

    p = sub.add_parser("delHost", help="admin: remove a host that holds no instances")
    p.add_argument("--host", required=True, help="NAME or ID")
    p.set_defaults(func=del_host)

    p = sub.add_parser("setHostState", help="admin: normal, or drained (takes no new VMs)")
    p.add_argument("--host", required=True, help="NAME or ID")
    p.add_argument("--state", required=True, help="normal or drained")
    p.set_defaults(func=set_host_state)

    p = sub.add_parser("evacuateHost", help="admin: drain a host and live-migrate its running "
                       "VMs to other hosts, showing progress")
    p.add_argument("--host", required=True, help="NAME or ID")
    p.add_argument("--parallel", type=int, help="migrations at a time (CM default: 4)")
    p.add_argument("--no-wait", action="store_true", help="print the plan and return")
    p.add_argument("--wait", type=float, default=3600.0, help="most seconds to follow it")
    p.set_defaults(func=evacuate_host)

    p = sub.add_parser("setHostNotes", help="admin: set a host's notes")
    p.add_argument("--host", required=True, help="NAME or ID")
    p.add_argument("--notes", required=True)
    p.set_defaults(func=set_host_notes)

    for cmd, func, text in (("addReservation", add_reservation, "admin: reserve a host for a user"),
                            ("delReservation", del_reservation, "admin: drop a reservation")):
        p = sub.add_parser(cmd, help=text)
        p.add_argument("--host", required=True, help="NAME or ID")
        p.add_argument("--user", dest="user_name", required=True, help="user name")
        p.set_defaults(func=func)

    p = sub.add_parser("getReservation", help="who a host is reserved for")
    p.add_argument("--host", required=True, help="NAME or ID")
    p.set_defaults(func=get_reservation)

    p = sub.add_parser("addNetwork", help="admin: add a network")
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--name", required=True)
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--vlan", type=int, metavar="ID", help="802.1Q VLAN on the uplink")
    kind.add_argument("--vxlan", type=int, metavar="VNI", help="VXLAN network id")
    kind.add_argument("--flat", action="store_true", help="the uplink bridged as is (default)")
    p.add_argument("--group", help="VXLAN multicast group")
    p.add_argument("--peers", help="VXLAN unicast peers A,B,...")
    p.add_argument("--port", type=int, help="VXLAN UDP port (default 4789)")
    p.add_argument("--mtu", type=int, help="e.g. 9000 for jumbo frames")
    p.add_argument("--cidr", help="address range for the allocator, e.g. 10.11.0.0/24")
    p.add_argument("--default", action="store_true", help="NICs with no network use this one")
    p.set_defaults(func=add_network)

    p = sub.add_parser("delNetwork", help="admin: remove a network no instance uses")
    p.add_argument("--id", type=int, required=True)
    p.set_defaults(func=del_network)
