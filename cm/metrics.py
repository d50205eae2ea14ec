"""The cluster manager's Prometheus metrics, read from its in-memory state at scrape time.

Hosts up and down (and each host's up flag, capacity and last heartbeat,
labelled by host name: hosts are few and named by admins), the heartbeat
interval and host expiry for the fleet's size, instances by
state and owner, the oldest change among the instances of each state (so
"Held for too long" is one PromQL comparison), the event sequence and the
watchers following it.

The dictionaries are copied (one C-level copy each, atomic under the GIL)
rather than read under the CM's lock, so a scrape never waits for, or
holds up, a commit.  Their objects are never changed in place (see
`tashi.cm.cluster`), so the copies are consistent objects.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tashi.cm.cluster import Cluster
from tashi.cm.commits import BUCKETS, Histogram
from tashi.cm.txn import Usage
from tashi.runtime.names import INSTANCE_STATE_NAMES, instance_state_name
from tashi.v1 import resources_pb2 as pb

MIB = 1024 * 1024


class ClusterCollector(Collector):
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def collect(self) -> Iterator[Metric]:
        c = self.cluster
        hosts = c.hosts.copy()
        instances = c.instances.copy()
        usage = c.usage.copy()
        beats = c.heartbeats.copy()
        yield from self._hosts(hosts, usage, beats)
        yield from self._instances(instances)
        yield from self._events()
        yield from self._commits()

    def _commits(self) -> Iterator[Metric]:
        combiner = self.cluster.combiner
        turns = HistogramMetricFamily(
            "tashi_cm_commit_turn_seconds", "How long each turn of the cluster's lock took: "
            "the changes queued for it made and stored together.")
        turns.add_metric([], *_buckets(combiner.turns))
        yield turns
        waits = HistogramMetricFamily(
            "tashi_cm_commit_wait_seconds", "How long each change waited for the turn it "
            "was made in, by whose: a call's (taken first) or the cluster manager's own "
            "(a start's answer, the liveness monitor's).", labels=("change",))
        for call, hist in combiner.waits.items():
            waits.add_metric(["call" if call else "own"], *_buckets(hist))
        yield waits


    def _hosts(self, hosts: dict[int, pb.Host], usage: dict[int, Usage],
               beats: dict[int, float]) -> Iterator[Metric]:
        up_total = sum(1 for h in hosts.values() if h.up)
        count = GaugeMetricFamily("tashi_cm_hosts", "Hosts known to the cluster manager, by "
                                  "whether their node manager is up.", labels=("status",))
        count.add_metric(["up"], up_total)
        count.add_metric(["down"], len(hosts) - up_total)
        yield count
        up = GaugeMetricFamily("tashi_cm_host_up", "1 while the host's node manager is "
                               "registered and heartbeating, else 0.", labels=("host",))
        cores = GaugeMetricFamily("tashi_cm_host_cores", "Cores the host's node manager "
                                  "reported.", labels=("host",))
        memory = GaugeMetricFamily("tashi_cm_host_memory_bytes", "Memory the host's node "
                                   "manager reported (less its reserve).", labels=("host",))
        used_cores = GaugeMetricFamily("tashi_cm_host_allocated_cores", "Cores held by "
                                       "instances assigned to the host.", labels=("host",))
        used_memory = GaugeMetricFamily("tashi_cm_host_allocated_memory_bytes", "Memory held "
                                        "by instances assigned to the host.", labels=("host",))
        beat = GaugeMetricFamily("tashi_cm_host_last_heartbeat_timestamp_seconds",
                                 "When the host's node manager was last heard from (Unix "
                                 "time; only hosts heard from since the CM started).",
                                 labels=("host",))
        offset = time.time() - time.monotonic()  # heartbeats are kept on the monotonic clock
        for hid, h in sorted(hosts.items()):
            name = [h.name]
            up.add_metric(name, 1 if h.up else 0)
            cores.add_metric(name, h.cores)
            memory.add_metric(name, h.memory_mib * MIB)
            use = usage.get(hid) or Usage()
            used_cores.add_metric(name, use.cores)
            used_memory.add_metric(name, use.memory_mib * MIB)
            seen = beats.get(hid)
            if seen is not None:
                beat.add_metric(name, seen + offset)
        yield from (up, cores, memory, used_cores, used_memory, beat)
        pace = self.cluster.cadence
        yield GaugeMetricFamily("tashi_cm_heartbeat_interval_seconds", "Shortest interval "
                                "between one host's heartbeats the CM asks for (hosts over "
                                "--heartbeat-rate).", value=pace.interval)
        if self.cluster.beats is not None:
            yield CounterMetricFamily("tashi_cm_beats", "Heartbeats the liveness process "
                                      "took (LivenessService.Beat; cm/beats.py).",
                                      value=self.cluster.beats.beats())
        yield GaugeMetricFamily("tashi_cm_host_expiry_seconds", "A host not heard from this "
                                "long is marked down (--expire-host-seconds, stretched with "
                                "the heartbeat interval).", value=pace.expire)

    def _instances(self, instances: dict[int, pb.Instance]) -> Iterator[Metric]:
        by = Counter[tuple[int, str]]()
        oldest: dict[int, float] = {}
        for inst in instances.values():
            by[(inst.status.state, inst.owner)] += 1
            t = inst.update_time.seconds + inst.update_time.nanos / 1e9
            if t and (inst.status.state not in oldest or t < oldest[inst.status.state]):
                oldest[inst.status.state] = t
        count = GaugeMetricFamily("tashi_cm_instances", "Instances by state and owner.",
                                  labels=("state", "owner"))
        for (state, owner), n in sorted(by.items()):
            count.add_metric([instance_state_name(state), owner], n)
        yield count
        states = GaugeMetricFamily("tashi_cm_instances_by_state", "Instances in each state "
                                   "(every state, zeros included).", labels=("state",))
        totals = Counter[int]()
        for (state, _owner), n in by.items():
            totals[state] += n
        for state, name in sorted(INSTANCE_STATE_NAMES.items()):
            if state != pb.INSTANCE_STATE_UNSPECIFIED:
                states.add_metric([name], totals[state])
        yield states
        age = GaugeMetricFamily("tashi_cm_instances_oldest_update_timestamp_seconds",
                                "The earliest last change among the instances in each state "
                                "(Unix time): how long the longest-waiting one has waited.",
                                labels=("state",))
        for state, t in sorted(oldest.items()):
            age.add_metric([instance_state_name(state)], t)
        yield age

    def _events(self) -> Iterator[Metric]:
        log = self.cluster.events
        yield GaugeMetricFamily("tashi_cm_event_sequence", "Sequence number of the last event.",
                                value=log.last_seq)
        yield GaugeMetricFamily("tashi_cm_event_first_sequence",
                                "Sequence number of the oldest event still retained.",
                                value=log.first_seq)
        yield GaugeMetricFamily("tashi_cm_watchers", "WatchEvents streams open now.",
                                value=log.watchers)


def _buckets(hist: Histogram) -> tuple[list[tuple[str, float]], float]:
    """A histogram's cumulative buckets and its sum, as HistogramMetricFamily takes them."""
    counts, total = list(hist.counts), hist.sum
    buckets, running = [], 0
    for bound, n in zip((*(str(b) for b in BUCKETS), "+Inf"), counts, strict=True):
        running += n
        buckets.append((bound, float(running)))
    return buckets, total
