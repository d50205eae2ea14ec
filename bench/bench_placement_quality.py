"""Packing quality: VMs placed before the first refusal when filling a mixed cluster.

Two fills of the same 1,000 hosts of mixed shapes (some short of cores, some
of memory), once per policy:

- equal VMs (2 cores, 4 GiB): the exact capacity bound is
  sum over hosts of min(free cores // 2, free memory // 4096); a scheduler
  that refuses only when a VM truly fits nowhere reaches it exactly.
- a random stream of mixed sizes: the bound is the longest prefix of the
  stream whose total cores and memory fit in the cluster's totals (a
  relaxation, so an upper bound that no real packing need reach).  After
  the first refusal the fill goes on through the rest of the stream; VMs
  placed "in all" count the small VMs a policy still takes once the big ones
  are refused, so the share of the cluster's cores and memory used is printed
  beside them.

The same holds for bench_placement's "placed" column (spread 8,203 and
densePack 7,847 of its 10,000 VMs at 1,000 hosts, issue 16): both policies
fill every core there; densePack refuses only once the cluster is full, at
its 7,847th VM, while spread first refuses at 7,423 and then takes smaller
VMs after refusing bigger ones.  What a policy places before its first
refusal is the measure of packing.

    python -m bench.bench_placement_quality [--hosts 1000] [--seed 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import random

from tashi.scheduler.cluster import ClusterView
from tashi.scheduler.model import Chosen, HostView, Policy, VmSpec, VmState
from tashi.scheduler.placer import Placer

HOST_SHAPES = [(8, 65536), (16, 32768), (24, 49152), (32, 262144), (48, 98304), (64, 131072)]
VM_SHAPES = [(1, 512), (1, 2048), (2, 4096), (2, 1024), (4, 16384), (8, 8192), (4, 4096)]


def hosts(n: int, seed: int) -> list[HostView]:
    rng = random.Random(seed)
    return [HostView(id=i, name=f"h{i}", cores=c, memory_mib=m)
            for i, (c, m) in enumerate((rng.choice(HOST_SHAPES) for _ in range(n)), start=1)]


def fill(hs: list[HostView], vms: list[VmSpec], policy: Policy) -> tuple[int, int, int, int]:
    """(placed before the first refusal, placed in all, cores and MiB placed in all)."""
    view = ClusterView(rng=random.Random(1))
    for h in hs:
        view.upsert_host(h)
    placer = Placer(view, policy)
    before_refusal = -1
    placed = cores = memory = 0
    for i, vm in enumerate(vms):
        decision = placer.decide(vm)
        if isinstance(decision, Chosen):
            placed += 1
            cores += vm.cores
            memory += vm.memory_mib
            view.upsert_instance(dataclasses.replace(
                vm, state=VmState.ACTIVATING, host_id=decision.host_id,
                charged_hosts=(decision.host_id,)))
        elif before_refusal < 0:
            before_refusal = i
    return (placed if before_refusal < 0 else before_refusal), placed, cores, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    hs = hosts(args.hosts, args.seed)
    total_cores = sum(h.cores for h in hs)
    total_memory = sum(h.memory_mib for h in hs)
    print(f"{args.hosts} hosts of mixed shapes: {total_cores} cores, {total_memory} MiB")

    exact = sum(min(h.cores // 2, h.memory_mib // 4096) for h in hs)
    equal = [VmSpec(id=i, cores=2, memory_mib=4096) for i in range(1, exact + 2)]
    print(f"\nequal VMs (2 cores, 4096 MiB): exact bound {exact}")
    for policy in Policy:
        first, *_ = fill(hs, equal, policy)
        print(f"  {policy.value:>9}: {first} placed before the first refusal "
              f"({first / exact:.4f} of the bound)")

    rng = random.Random(args.seed + 1)
    stream = []
    for i in range(1, 3 * total_cores // 2):
        cores, memory = rng.choice(VM_SHAPES)
        stream.append(VmSpec(id=i, cores=cores, memory_mib=memory))
    bound = cores_sum = memory_sum = 0
    for vm in stream:
        cores_sum += vm.cores
        memory_sum += vm.memory_mib
        if cores_sum > total_cores or memory_sum > total_memory:
            break
        bound += 1
    print(f"\nmixed stream of {len(stream)} VMs: resource bound for the first refusal {bound}")
    for policy in Policy:
        first, placed, cores, memory = fill(hs, stream, policy)
        print(f"  {policy.value:>9}: {first} placed before the first refusal "
              f"({first / bound:.3f} of the bound); {placed} of the stream placed in all, "
              f"using {cores / total_cores:.3f} of the cores and "
              f"{memory / total_memory:.3f} of the memory")


if __name__ == "__main__":
    main()
