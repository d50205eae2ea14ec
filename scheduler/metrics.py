"""The scheduler's Prometheus metrics: placements, conflicts, decision latency, Held VMs
and how far behind the cluster manager's event stream it is.

Counters come from the agent's own `Stats` (written by the agent thread
only; a scrape reads plain ints).  Decision latency is measured by a hook
(`DecisionTimer`): from the moment the scheduler learns of a Pending VM to
its first placement decision, the delay a user waiting on `createVm` sees
from the scheduler.  The lag asks the CM for its last sequence at scrape
time, bounded by a short timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tashi.runtime.metrics import ServiceMetrics, cm_connection, cm_last_sequence
from tashi.scheduler.agent import Agent
from tashi.scheduler.hooks import Hook, PreCreate
from tashi.scheduler.model import HostView, VmSpec, VmState

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)
CM_PROBE_SECONDS = 2.0


class DecisionTimer(Hook):
    """Times Pending -> first placement decision.  Runs in the agent thread."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = Histogram(
            "tashi_scheduler_decision_latency_seconds",
            "Time from the scheduler learning of a Pending VM to its first placement "
            "decision.", buckets=LATENCY_BUCKETS, registry=registry)
        self._since: dict[int, float] = {}

    def observe(self, vm: VmSpec) -> None:
        if vm.state is VmState.PENDING:
            self._since.setdefault(vm.id, time.monotonic())
        else:
            self._since.pop(vm.id, None)

    def pre_create(self, vm: VmSpec, host: HostView) -> PreCreate:
        start = self._since.pop(vm.id, None)
        if start is not None:
            self.latency.observe(time.monotonic() - start)
        return PreCreate()

    def post_destroy(self, vm: VmSpec) -> None:
        self._since.pop(vm.id, None)


class SchedulerCollector(Collector):
    def __init__(self, agent: Agent, probe_seconds: float = CM_PROBE_SECONDS) -> None:
        self.agent = agent
        self.probe_seconds = probe_seconds

    def collect(self) -> Iterator[Metric]:
        a = self.agent
        s = a.stats
        for name, value, text in (
            ("placements", s.accepted, "Placements the cluster manager accepted."),
            ("proposals", s.proposed, "Placements proposed to the cluster manager."),
            ("conflicts", s.refused, "Proposals the cluster manager refused (the host "
                                     "filled up or the VM changed since the decision)."),
            ("holds", s.held, "VMs the scheduler asked the cluster manager to hold."),
            ("decisions", s.decisions, "Placement decisions made."),
            ("passes", s.passes, "Scheduling passes run."),
            ("relists", s.sessions, "Full relists from the cluster manager (sessions)."),
            ("events", s.events, "Events applied from the cluster manager's stream."),
        ):
            yield CounterMetricFamily(f"tashi_scheduler_{name}", text, value=value)
        yield from cm_connection("tashi_scheduler", a.informer)
        view = a.view
        yield GaugeMetricFamily("tashi_scheduler_held_instances",
                                "Held VMs the scheduler is waiting to place.",
                                value=len(view.held))
        yield GaugeMetricFamily("tashi_scheduler_pending_instances",
                                "Pending VMs not yet placed.", value=len(view.pending))
        cm_seq = cm_last_sequence(a.client, self.probe_seconds)
        seq = a.seq  # read after the CM's, so the lag is never overstated
        yield GaugeMetricFamily("tashi_scheduler_event_sequence",
                                "Sequence of the last cluster manager event applied.", value=seq)
        if cm_seq is not None:
            yield GaugeMetricFamily("tashi_scheduler_lag_events",
                                    "Events the cluster manager has that the scheduler has not "
                                    "applied yet.", value=max(0, cm_seq - seq))


def serve(agent: Agent, listen: str) -> ServiceMetrics:
    """Time decisions and serve the scheduler's metrics on `listen` (no-op when empty)."""
    metrics = ServiceMetrics(listen)
    if metrics.enabled:
        agent.hooks.hooks.append(DecisionTimer(metrics.registry))
        metrics.serve(SchedulerCollector(agent))
    return metrics
