"""Capacity questions: getSlots (how many more VMs of a size fit) and getVmLayout."""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from tashi.cli.context import Context, UsageError
from tashi.runtime import fit
from tashi.runtime.names import host_state_name
from tashi.v1 import resources_pb2 as pb

LAYOUT_COLUMNS = ["id", "name", "state", "up", "instances", "used_cores", "cores",
                  "used_memory_mib", "memory_mib"]
SLOT_COLUMNS = ["slots", "cores", "memory_mib", "hosts"]


def slots_on(host: pb.Host, cores: int, memory_mib: int) -> int:
    """VMs of this size that still fit on one host (0 unless it is up and Normal)."""
    if not host.up or host.state != pb.HOST_STATE_NORMAL:
        return 0
    return fit.slots(host.cores - host.used_cores, host.memory_mib - host.used_memory_mib,
                     cores, memory_mib)


def get_slots(ctx: Context) -> int:
    cores, memory = ctx.args.cores, ctx.args.memory
    if cores < 1 or memory < 1:
        raise UsageError("--cores and --memory must be at least 1")
    hosts = ctx.client().list_hosts()
    total = sum(slots_on(h, cores, memory) for h in hosts)
    if ctx.args.output in ("json", "yaml"):
        text = json.dumps(total) if ctx.args.output == "json" else yaml.safe_dump(total)
        sys.stdout.write(text.rstrip() + "\n")
        return 0
    usable = sum(1 for h in hosts if h.up and h.state == pb.HOST_STATE_NORMAL)
    ctx.output([{"slots": total, "cores": cores, "memory_mib": memory, "hosts": usable}],
               SLOT_COLUMNS)
    return 0


def get_vm_layout(ctx: Context) -> int:
    client = ctx.client()
    hosts = client.list_hosts()
    names: dict[int, list[str]] = {}
    for inst in client.list_instances():
        if inst.status.host_id:
            names.setdefault(inst.status.host_id, []).append(inst.name)
    rows = [{
        "id": h.id, "name": h.name, "state": host_state_name(h.state), "up": h.up,
        "instances": sorted(names.get(h.id, [])),
        "used_cores": h.used_cores, "cores": h.cores,
        "used_memory_mib": h.used_memory_mib, "memory_mib": h.memory_mib,
        "instance_count": h.instance_count,
    } for h in sorted(hosts, key=lambda h: h.id)]
    ctx.output(rows, LAYOUT_COLUMNS)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("getSlots",
                       help="how many more VMs of a size fit on the up, Normal hosts")
    p.add_argument("--cores", type=int, required=True)
    p.add_argument("--memory", type=int, required=True, help="MiB")
    p.set_defaults(func=get_slots)

    p = sub.add_parser("getVmLayout",
                       help="per host: its VMs, used/total cores and memory")
    p.set_defaults(func=get_vm_layout)
