"""One placement decision: filters, then the best host by the VM's policy.

`decide` walks the capacity index best-first and stops at the first host
that passes every check, so a decision looks at a handful of hosts however
large the cluster; only a VM that fits nowhere costs a walk over every host
with room, and its reason is then remembered for VMs of the same shape
until room may have appeared (`ClusterView.capacity_epoch`), which keeps a
queue of identical VMs that fit nowhere cheap.  `decide_naive` is the full
scan of all hosts that the benchmark and the tests compare against.
"""

from __future__ import annotations

from collections import Counter

from tashi.scheduler.cluster import ClusterView
from tashi.scheduler.filters import first_failure, vm_failure
from tashi.scheduler.model import Chosen, Decision, HostView, Policy, Refused, VmSpec
from tashi.scheduler.scorers import SCORERS, ScoreKey, policy_for

Shape = tuple[int, int, str, tuple[int, ...], Policy]


class Placer:
    def __init__(self, view: ClusterView, default_policy: Policy = Policy.SPREAD) -> None:
        self.view = view
        self.default_policy = default_policy
        self._memo: dict[Shape, str] = {}
        self._memo_epoch = -1

    def decide(self, vm: VmSpec) -> Decision:
        why = vm_failure(vm, self.view)
        if why is not None:
            return Refused(vm.id, why)
        if vm.resume_host_id:
            return self._on_resume_host(vm)
        if vm.hints.target_host:
            decision = self._on_target(vm)
            if isinstance(decision, Chosen) or not vm.hints.allow_elsewhere:
                return decision
        return self._anywhere(vm)

    def _on_resume_host(self, vm: VmSpec) -> Decision:
        """A suspended VM resumes where its saved state (and its local disks) are."""
        host = self.view.host(vm.resume_host_id)
        if host is None:
            return Refused(vm.id, f"its saved state is on host {vm.resume_host_id}, which is "
                                  "no longer registered")
        failure = first_failure(host, vm, self.view)
        if failure is None:
            return Chosen(vm.id, host.id, host.name)
        return Refused(vm.id, f"its saved state is on host {host.name}, which cannot take it "
                              f"now: {failure.detail}")

    def _on_target(self, vm: VmSpec) -> Decision:
        ref = vm.hints.target_host
        host = self.view.host_by_ref(ref)
        if host is None:
            return Refused(vm.id, f"target host {ref} does not exist")
        failure = first_failure(host, vm, self.view)
        if failure is None:
            return Chosen(vm.id, host.id, host.name)
        return Refused(vm.id, f"target host {host.name}: {failure.detail}")

    def _anywhere(self, vm: VmSpec) -> Decision:
        policy = policy_for(vm, self.default_policy)
        shape = self._shape(vm, policy)
        if shape is not None:
            if self._memo_epoch != self.view.capacity_epoch:
                self._memo.clear()
                self._memo_epoch = self.view.capacity_epoch
            known = self._memo.get(shape)
            if known is not None:
                return Refused(vm.id, known)
        walked: Counter[str] = Counter()
        for host_id in self.view.index.candidates(vm.cores, vm.memory_mib, policy):
            host = self.view.host(host_id)
            assert host is not None
            failure = first_failure(host, vm, self.view)
            if failure is None:
                return Chosen(vm.id, host.id, host.name)
            walked[failure.key] += 1
        reason = self._nowhere(vm, walked)
        if shape is not None:
            self._memo[shape] = reason
        return Refused(vm.id, reason)

    def _shape(self, vm: VmSpec, policy: Policy) -> Shape | None:
        """VMs that differ only in name and id fit the same hosts, unless something
        about them alone (a group, a ban from a failed start) narrows their choice."""
        if vm.anti_affinity_key is not None or self.view.has_avoids(vm.id):
            return None
        return (vm.cores, vm.memory_mib, vm.owner, vm.networks, policy)

    def _nowhere(self, vm: VmSpec, walked: Counter[str]) -> str:
        counts = Counter(walked)
        lack_cores, lack_memory = self.view.index.shortfall(vm.cores, vm.memory_mib)
        if lack_cores:
            counts["not enough free cores"] += lack_cores
        if lack_memory:
            counts["not enough free memory"] += lack_memory
        for host in self.view.unschedulable_hosts():
            failure = first_failure(host, vm, self.view)
            counts[failure.key if failure else "not schedulable"] += 1
        head = f"fits on no host (needs {vm.cores} cores, {vm.memory_mib} MiB)"
        if not counts:
            return f"{head}: no hosts are registered"
        parts = [f"{n} {'host' if n == 1 else 'hosts'} {key}" for key, n in counts.most_common()]
        return f"{head}: " + ", ".join(parts)

    def decide_naive(self, vm: VmSpec) -> Decision:
        """The baseline: every filter on every host, then the best score."""
        why = vm_failure(vm, self.view)
        if why is not None:
            return Refused(vm.id, why)
        if vm.resume_host_id:
            return self._on_resume_host(vm)
        if vm.hints.target_host:
            decision = self._on_target(vm)
            if isinstance(decision, Chosen) or not vm.hints.allow_elsewhere:
                return decision
        scorer = SCORERS[policy_for(vm, self.default_policy)]
        best: HostView | None = None
        best_key: ScoreKey | None = None
        walked: Counter[str] = Counter()
        for host in self.view.hosts():
            failure = first_failure(host, vm, self.view)
            if failure is not None:
                walked[failure.key] += 1
                continue
            key = scorer(host)
            if best_key is None or key > best_key:
                best, best_key = host, key
        if best is None:
            return Refused(vm.id, self._naive_reason(vm, walked))
        return Chosen(vm.id, best.id, best.name)

    @staticmethod
    def _naive_reason(vm: VmSpec, walked: Counter[str]) -> str:
        head = f"fits on no host (needs {vm.cores} cores, {vm.memory_mib} MiB)"
        if not walked:
            return f"{head}: no hosts are registered"
        parts = [f"{n} {'host' if n == 1 else 'hosts'} {key}" for key, n in walked.most_common()]
        return f"{head}: " + ", ".join(parts)
