"""Ranking of feasible hosts: higher keys win.

Keys are tuples compared lexicographically, Tashi's policies made total:
- spread (default): fewest VMs, then most free cores, then most free memory;
- densePack (best fit): fewest free cores, then least free memory, then most
  VMs.  Cores come first because they are what a cluster runs out of (filling
  bench_placement_quality's mixed cluster uses 99% of its cores and under half
  of its memory), so a VM goes where it leaves the smallest hole in the scarce
  resource and big holes stay whole for big VMs; memory breaks ties; among
  hosts of equal room the one already running more VMs wins, so empty hosts
  stay empty.  (The count used to come first: a busy host with a lot of room
  beat a nearly full one, and could be left with a hole too small for the
  next big VM: tests/scheduler/test_policy.py.)
The capacity index (index.py) yields candidates in exactly this order, so the
indexed search and the naive full scan pick hosts of equal rank; tests hold
them to that.
"""

from __future__ import annotations

from collections.abc import Callable

from tashi.scheduler.model import HostView, Policy, VmSpec

ScoreKey = tuple[int, int, int]
Scorer = Callable[[HostView], ScoreKey]


def spread_key(host: HostView) -> ScoreKey:
    return (-host.instance_count, host.free_cores, host.free_memory_mib)


def dense_pack_key(host: HostView) -> ScoreKey:
    return (-host.free_cores, -host.free_memory_mib, host.instance_count)


SCORERS: dict[Policy, Scorer] = {Policy.SPREAD: spread_key, Policy.DENSE_PACK: dense_pack_key}


def policy_for(vm: VmSpec, default: Policy) -> Policy:
    """The `densePack` hint overrides the scheduler's default for one VM."""
    if vm.hints.dense_pack is None:
        return default
    return Policy.DENSE_PACK if vm.hints.dense_pack else Policy.SPREAD
