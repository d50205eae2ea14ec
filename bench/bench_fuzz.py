"""A long, seeded run of the protobuf fuzzer (tests/protofuzz.py) against a live
cluster manager, scheduler and node manager on the test driver.

    PYTHONPATH=. python bench/bench_fuzz.py [--messages 50000] [--seed 1]

Prints how many messages went to which service, the status codes they got,
the messages per second, and whether anything answered UNKNOWN or INTERNAL
or died.  The same seed sends the same messages.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import grpc
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tashi.runtime.rpc import channel
from tests.harness import NMProcess, SchedulerProcess, start_cm, stop_all
from tests.protofuzz import CM_RPCS, NM_RPCS, calls, send

BAD = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    codes: collections.Counter[str] = collections.Counter()
    per_service: collections.Counter[str] = collections.Counter()
    bad: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tashi-fuzz-") as tmp:
        work = Path(tmp)
        cm = start_cm(work, expire_host_seconds=3600, admins="root,fuzzer")
        root = cm.client()
        root.create_user("alice")
        root.create_host("n1")
        nm = NMProcess(work / "nm", cm.address, "n1")
        sched = SchedulerProcess(work / "sched", cm.address)
        chans = {"cm": channel(cm.address), "nm": channel(nm.address)}
        surface = st.one_of(
            calls([r for r in CM_RPCS if r.service != "tashi.v1.NodeRegistryService"]).map(
                lambda c: ("cm", "fuzzer", c)),
            st.tuples(st.just("cm"), st.sampled_from(["alice", "nobody"]), calls(CM_RPCS)),
            calls([r for r in NM_RPCS if r.method.name != "SendVm"]).map(
                lambda c: ("nm", "root", c)))

        @seed(args.seed)
        @settings(max_examples=args.messages, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(call=surface)
        def one(call: tuple[str, str, tuple[object, bytes]]) -> None:
            target, user, (rpc, body) = call
            code = send(chans[target], rpc, body, user)  # type: ignore[arg-type]
            codes[code.name] += 1
            per_service[str(rpc).split("/")[1]] += 1
            if code in BAD and len(bad) < 20:
                bad.append(f"{rpc} as {user}: {code.name}")

        t0 = time.monotonic()
        try:
            one()
        finally:
            elapsed = time.monotonic() - t0
            alive = {"tashi-cm": cm.alive(), "tashi-nm": nm.alive(), "tashi-scheduler":
                     sched.alive()}
            for ch in chans.values():
                ch.close()
            root.close()
            stop_all(sched, nm, cm)
    total = sum(codes.values())
    print(f"seed {args.seed}: {total:,} messages in {elapsed:.0f} s = {total / elapsed:,.0f}/s")
    print("  by service: " + ", ".join(f"{k} {v:,}" for k, v in per_service.most_common()))
    print("  answers:    " + ", ".join(f"{k} {v:,}" for k, v in codes.most_common()))
    print(f"  processes alive at the end: {alive}")
    print(f"  UNKNOWN or INTERNAL: {sum(codes[c.name] for c in BAD)}")
    for line in bad:
        print(f"    {line}")
    return 0 if not bad and all(alive.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
