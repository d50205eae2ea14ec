"""Placement core: decisions per second with the capacity index vs a naive full scan.

Builds a cluster view of N synthetic hosts of mixed sizes (no gRPC: the
policy is pure) and places 10,000 VMs of mixed sizes one decision at a time,
each placement applied to the view before the next decision, as the agent
does within a pass.  The naive baseline runs the same filters and scorers on
every host for every decision; it is timed on the first decisions of the
same workload (its cost per decision depends on the host count, not on how
full the cluster is).

    python bench/bench_placement.py [--vms 10000] [--hosts 1000,10000] [--naive 1000]
                                    [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time

from tashi.scheduler.cluster import ClusterView
from tashi.scheduler.model import Chosen, Hints, HostView, Policy, VmSpec, VmState
from tashi.scheduler.placer import Placer

# 1,000 of these hold about 80% of the 10,000 VMs, so that run also decides refusals.
HOST_SHAPES = [(16, 65536), (24, 98304), (32, 131072)]
VM_SHAPES = [(1, 1024), (1, 2048), (2, 4096), (4, 8192), (8, 16384), (2, 2048)]


def build(n_hosts: int, seed: int) -> ClusterView:
    rng = random.Random(seed)
    view = ClusterView(rng=rng)
    for i in range(1, n_hosts + 1):
        cores, memory = rng.choice(HOST_SHAPES)
        view.upsert_host(HostView(id=i, name=f"h{i}", cores=cores, memory_mib=memory))
    return view


def workload(n_vms: int, seed: int) -> list[VmSpec]:
    rng = random.Random(seed + 1)
    vms = []
    for i in range(1, n_vms + 1):
        cores, memory = rng.choice(VM_SHAPES)
        r = rng.random()
        hints = Hints()
        if r < 0.10:
            hints = Hints(dense_pack=True)
        elif r < 0.15:
            hints = Hints(anti_affinity_group=f"g{i // 5}")
        vms.append(VmSpec(id=i, name=f"vm{i}", owner=rng.choice(["alice", "bob"]),
                          cores=cores, memory_mib=memory, hints=hints))
    return vms


@dataclasses.dataclass(order=True)
class Run:
    """One run: total time, and the time of placements and of refusals apart (a
    refusal is often answered from the placer's memo of shapes that fit nowhere,
    several times faster than a placement: mixing them flatters the rate)."""

    took: float
    placing: float
    refusing: float
    placed: int
    refused: int

    @property
    def placements_per_s(self) -> float:
        return self.placed / self.placing if self.placing else 0.0

    @property
    def refusals_per_s(self) -> float:
        return self.refused / self.refusing if self.refusing else 0.0


def best_of(repeats: int, n_hosts: int, seed: int, vms: list[VmSpec], naive: bool,
            policy: Policy) -> Run:
    """The fastest of a few runs on fresh views: other work on the machine only ever
    slows a run down."""
    runs = [run(build(n_hosts, seed), vms, naive, policy) for _ in range(repeats)]
    return min(runs)


def run(view: ClusterView, vms: list[VmSpec], naive: bool, policy: Policy) -> Run:
    placer = Placer(view, policy)
    decide = placer.decide_naive if naive else placer.decide
    placed = refused = 0
    placing = refusing = 0.0
    clock = time.perf_counter
    start = clock()
    for vm in vms:
        t0 = clock()
        decision = decide(vm)
        t1 = clock()
        if isinstance(decision, Chosen):
            placing += t1 - t0
            view.upsert_instance(dataclasses.replace(
                vm, state=VmState.ACTIVATING, host_id=decision.host_id,
                charged_hosts=(decision.host_id,)))
            placed += 1
        else:
            refusing += t1 - t0
            refused += 1
    return Run(clock() - start, placing, refusing, placed, refused)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--hosts", default="1000,10000")
    parser.add_argument("--naive", type=int, default=1000,
                        help="decisions timed for the naive full scan")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    vms = workload(args.vms, args.seed)
    print(f"placing {args.vms} VMs of mixed sizes (10% with hint densePack, 5% in "
          f"anti-affinity groups of 5) on hosts of 16-32 cores")
    print(f"{'policy':>9} {'hosts':>7} {'placed/s':>10} {'refused/s':>10} {'placed':>7} "
          f"{'refused':>8} {'naive placed/s':>15} {'speed-up':>9}")
    print("  (placements and refusals timed apart; the naive scan on the first "
          f"{args.naive:,} decisions, compared on placements only)")
    for policy in (Policy.SPREAD, Policy.DENSE_PACK):
        per_placement: dict[int, float] = {}
        for n in (int(x) for x in args.hosts.split(",")):
            r = best_of(args.repeats, n, args.seed, vms, False, policy)
            per_placement[n] = r.placing / max(1, r.placed)
            sample = vms[:args.naive]
            indexed = best_of(args.repeats, n, args.seed, sample, False, policy)
            naive = best_of(args.repeats, n, args.seed, sample, True, policy)
            print(f"{policy.value:>9} {n:>7} {r.placements_per_s:>10,.0f} "
                  f"{r.refusals_per_s:>10,.0f} {r.placed:>7} {r.refused:>8} "
                  f"{naive.placements_per_s:>15,.0f} "
                  f"{indexed.placements_per_s / naive.placements_per_s:>8.1f}x")
        sizes = sorted(per_placement)
        if len(sizes) >= 2:
            small, large = sizes[0], sizes[-1]
            print(f"{policy.value:>9} time per placement at {large:,} hosts / at {small:,} "
                  f"hosts: {per_placement[large] / per_placement[small]:.2f}x (same VMs)")
            # The same load per host as the small cluster: as full, as many refusals.
            scaled = workload(args.vms * large // small, args.seed)
            r = best_of(args.repeats, large, args.seed, scaled, False, policy)
            print(f"{policy.value:>9} {large:>7} {r.placements_per_s:>10,.0f} "
                  f"{r.refusals_per_s:>10,.0f} {r.placed:>7} {r.refused:>8}   "
                  f"({len(scaled):,} VMs: as full as {small:,} hosts)")
            print(f"{policy.value:>9} time per placement at {large:,} hosts / at {small:,} "
                  f"hosts: {r.placing / max(1, r.placed) / per_placement[small]:.2f}x "
                  "(equally full)")


if __name__ == "__main__":
    main()
