"""tashi watch (admins): follow the cluster manager's event stream, one line per event.

From now on, or replayed from `--since SEQ`; `--kind` and `--host` narrow it
as WatchEvents does.  The stream has no deadline, so a cluster manager that
stops answering without closing the connection (paused, partitioned) is found
by the channel's keepalive (runtime/server.py: within KEEPALIVE_SECONDS +
KEEPALIVE_TIMEOUT_SECONDS of the last thing it sent); a restart closes the
stream at once.  Either way the loss is said on stderr, the command waits for
the CM with backoff, says when it is back, and resumes after the last
sequence it saw: no event is missed or shown twice.  History the CM no
longer keeps (OUT_OF_RANGE) ends the command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import grpc
import yaml

from tashi.cli.context import Context
from tashi.cli.render import to_dict
from tashi.runtime.client import ClusterClient, TashiError
from tashi.runtime.metrics import cm_last_sequence
from tashi.runtime.names import instance_state_name
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb

KINDS = {"host": cmpb.RESOURCE_KIND_HOST, "instance": cmpb.RESOURCE_KIND_INSTANCE,
         "network": cmpb.RESOURCE_KIND_NETWORK, "user": cmpb.RESOURCE_KIND_USER}
MAX_RETRY_SECONDS = 5.0


def event_line(event: pb.Event) -> str:
    """seq, time, type, the subject (kind id name, an instance's state), actor, message."""
    kind = event.WhichOneof("subject") or "-"
    subject = getattr(event, kind) if kind != "-" else None
    ident = getattr(subject, "id", "") if subject is not None else ""
    name = getattr(subject, "name", "") if subject is not None else ""
    what = f"{kind} {ident} {name}".rstrip()
    if isinstance(subject, pb.Instance):
        what += f" {instance_state_name(subject.status.state)}"
    etype = pb.EventType.Name(event.type).removeprefix("EVENT_TYPE_")
    when = event.time.ToJsonString() if event.time.seconds else "-"
    return f"{event.seq} {when} {etype} {what} by {event.actor or '-'}: {event.message}"


def _print(event: pb.Event, output: str) -> None:
    if output == "json":
        text = json.dumps(to_dict(event))
    elif output == "yaml":
        text = yaml.safe_dump([to_dict(event)]).rstrip()
    else:
        text = event_line(event)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _say(message: str) -> None:
    sys.stderr.write(f"tashi watch: {message}\n")
    sys.stderr.flush()


def _wait_for_cm(client: ClusterClient, seq: int) -> None:
    """Until the CM answers again (backoff up to MAX_RETRY_SECONDS)."""
    delay = 0.5
    while True:
        try:
            client.wait_ready(timeout=2.0)
        except TashiError:
            time.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_SECONDS)
            continue
        _say(f"reconnected to the cluster manager at {client.address}; "
             f"resuming after seq {seq}")
        return


def watch(ctx: Context) -> int:
    args = ctx.args
    client = ctx.client()
    if args.since is not None:
        seq = args.since
    else:
        now = cm_last_sequence(client, args.timeout)
        if now is None:
            raise TashiError(grpc.StatusCode.UNAVAILABLE,
                             f"the cluster manager at {client.address} did not answer")
        seq = now
    kinds = [KINDS[k] for k in args.kind or ()]
    shown = 0
    while True:
        try:
            stream = client.watch_events(seq, kinds=kinds, host=args.host or None)
            for events in stream:
                for event in events:
                    _print(event, args.output)
                    shown += 1
                    if args.count and shown >= args.count:
                        stream.cancel()
                        return 0
                seq = stream.seq
            raise TashiError(grpc.StatusCode.UNAVAILABLE, "the event stream ended")
        except TashiError as exc:
            if exc.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            _say(f"lost the cluster manager at {client.address} ({exc}); "
                 f"reconnecting, then resuming after seq {seq}")
            _wait_for_cm(client, seq)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("watch", help="admin: follow the cluster manager's events as they "
                                     "happen (reconnects and resumes on its own)")
    p.add_argument("--since", type=int, default=None,
                   help="replay from after this sequence (default: from now)")
    p.add_argument("--kind", action="append", choices=sorted(KINDS),
                   help="only events about this kind of resource (repeatable)")
    p.add_argument("--host", default="", help="only events about this host (name or id)")
    p.add_argument("--count", type=int, default=0, help="stop after this many events")
    p.set_defaults(func=watch)
