"""User commands on instances: createVm, createMany, destroyVm, pauseVm, getInstances ..."""

from __future__ import annotations

import argparse
import re
from typing import Any

from tashi.cli import parse
from tashi.cli.context import Context, UsageError
from tashi.runtime.client import TashiError
from tashi.runtime.names import INSTANCE_STATES_BY_NAME
from tashi.v1 import resources_pb2 as pb

INSTANCE_COLUMNS = ["id", "name", "owner", "state", "host_name", "cores", "memory_mib",
                    "state_reason"]

# command -> (client verb, help)
ACTIONS = {
    "destroyVm": ("Delete", "destroy an instance (Pending/Held ones go at once)"),
    "shutdownVm": ("Shutdown", "ask an instance's guest to power off"),
    "pauseVm": ("Pause", "pause a running instance"),
    "unpauseVm": ("Unpause", "let a paused instance run again"),
    "suspendVm": ("Suspend", "save a running instance to a file and release its host"),
    "resumeVm": ("Resume", "place a suspended instance again and restore it"),
}
MANY = {"destroyMany": "Delete", "shutdownMany": "Shutdown"}


def _spec(args: argparse.Namespace, name: str) -> pb.Instance:
    """The instance as asked: a name and a spec (the CM writes the status)."""
    spec = pb.InstanceSpec(cores=args.cores, memory_mib=args.memory, group_name=args.group or "")
    spec.disks.extend(parse.disks(args.disks or ""))
    spec.nics.extend(parse.nics(args.nics or ""))
    for key, value in parse.hints(args.hints or "").items():
        spec.hints[key] = value
    return pb.Instance(name=name, spec=spec)


def create_vm(ctx: Context) -> int:
    a = ctx.args
    made = ctx.client().create_instances(_spec(a, a.name), request_id=a.request_id)
    ctx.output(made, INSTANCE_COLUMNS)
    return 0


def create_many(ctx: Context) -> int:
    a = ctx.args
    if a.count < 1:
        raise UsageError("--count must be at least 1")
    made = ctx.client().create_instances(_spec(a, a.basename), count=a.count,
                                         request_id=a.request_id)
    ctx.output(made, INSTANCE_COLUMNS)
    return 0


def action(verb: str) -> Any:
    def run(ctx: Context) -> int:
        inst = ctx.client().instance_action(verb, ctx.args.instance,
                                            request_id=ctx.args.request_id)
        ctx.output([inst], INSTANCE_COLUMNS)
        return 0
    return run


def many(verb: str) -> Any:
    def run(ctx: Context) -> int:
        client = ctx.client()
        pattern = re.compile(re.escape(ctx.args.basename) + r"-\d+$")
        mine = [i for i in client.list_instances(owner=client.user) if pattern.match(i.name)]
        if not mine:
            raise UsageError(f"you have no instances named {ctx.args.basename}-N")
        done, failed = [], 0
        for inst in mine:
            try:
                done.append(client.instance_action(verb, inst.id))
            except TashiError as exc:
                failed += 1
                ctx.err(f"{inst.name}: {exc}")
        ctx.output(done, INSTANCE_COLUMNS)
        return 1 if failed else 0
    return run


def migrate_vm(ctx: Context) -> int:
    inst = ctx.client().migrate_instance(ctx.args.instance, ctx.args.dst)
    ctx.output([inst], INSTANCE_COLUMNS)
    return 0


def _states(text: str | None) -> list[int]:
    out = []
    for name in filter(None, (text or "").split(",")):
        state = INSTANCE_STATES_BY_NAME.get(name.lower())
        if state is None:
            raise UsageError(f"no instance state {name!r}")
        out.append(state)
    return out


def get_instances(ctx: Context) -> int:
    a = ctx.args
    client = ctx.client()
    owner = client.user if a.mine else (a.owner or "")
    ctx.output(client.list_instances(owner=owner, states=_states(a.state)), INSTANCE_COLUMNS)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    def shape(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cores", type=int, default=1, help="vCPUs (default 1)")
        p.add_argument("--memory", type=int, default=128, help="MiB (default 128)")
        p.add_argument("--disks", help="IMAGE[:persistent],... from the image store")
        p.add_argument("--nics", help="NETWORK[:IP[:MAC]],...")
        p.add_argument("--hints", help="KEY=VALUE,... (e.g. densePack=True,targetHost=h1)")
        p.add_argument("--group", help="group name (instances of a group spread over hosts)")
        p.add_argument("--request-id", help="retry-safe id of this call")

    p = sub.add_parser("createVm", help="create one instance")
    p.add_argument("--name", required=True)
    shape(p)
    p.set_defaults(func=create_vm)

    p = sub.add_parser("createMany", help="create COUNT instances named BASENAME-0..")
    p.add_argument("--basename", required=True)
    p.add_argument("--count", type=int, required=True)
    shape(p)
    p.set_defaults(func=create_many)

    for cmd, (verb, text) in ACTIONS.items():
        p = sub.add_parser(cmd, help=text)
        p.add_argument("--instance", required=True, help="NAME or ID")
        p.add_argument("--request-id", help="retry-safe id of this call")
        p.set_defaults(func=action(verb))

    for cmd, verb in MANY.items():
        p = sub.add_parser(cmd, help=f"{verb.lower()} all your instances named BASENAME-N")
        p.add_argument("--basename", required=True)
        p.set_defaults(func=many(verb))

    p = sub.add_parser("migrateVm", help="move a running instance to another host")
    p.add_argument("--instance", required=True, help="NAME or ID")
    p.add_argument("--dst", required=True, help="target host NAME or ID")
    p.set_defaults(func=migrate_vm)

    for cmd, mine in (("getInstances", False), ("getMyInstances", True)):
        p = sub.add_parser(cmd, help="list instances" + (" you own" if mine else ""))
        p.add_argument("--state", help="only these states, e.g. Running,Held")
        if not mine:
            p.add_argument("--owner", help="only this user's")
        p.set_defaults(func=get_instances, mine=mine, owner=None)
