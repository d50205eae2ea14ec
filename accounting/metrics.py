"""The accounting service's Prometheus metrics: events ingested into the ledger and how
far behind the cluster manager's event stream the ledger is.

`CountingLedger` is the ledger that also counts the events it commits (the
follower is its only writer).  The lag asks the CM for its last sequence at
scrape time, bounded by a short timeout, and leaves the lag out when the CM
does not answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tashi.accounting.ledger import Ledger
from tashi.runtime.client import ClusterClient
from tashi.runtime.informer import Informer
from tashi.runtime.metrics import cm_connection, cm_last_sequence
from tashi.runtime.tls import Tls
from tashi.v1 import resources_pb2 as pb

CM_PROBE_SECONDS = 2.0


class CountingLedger(Ledger):
    """The ledger, counting the events it commits since the process started."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.ingested = 0

    def apply(self, events: Sequence[pb.Event]) -> int:
        n = super().apply(events)
        self.ingested += n
        return n


class AccountingCollector(Collector):
    def __init__(self, ledger: CountingLedger, cm_address: str, user: str = "root",
                 probe_seconds: float = CM_PROBE_SECONDS, tls: Tls | None = None,
                 informer: Informer | None = None) -> None:
        self.ledger = ledger
        self.informer = informer  # the follower's: its link to the CM
        self.cm_address = cm_address
        self.user = user
        self.tls = tls
        self.probe_seconds = probe_seconds
        self._client: ClusterClient | None = None  # made at the first scrape

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("tashi_accounting_events_ingested",
                                  "Cluster manager events committed to the ledger.",
                                  value=self.ledger.ingested)
        if self.informer is not None:
            yield from cm_connection("tashi_accounting", self.informer)
        if self._client is None:
            self._client = ClusterClient(self.cm_address, self.user, self.probe_seconds,
                                         tls=self.tls)
        cm_seq = cm_last_sequence(self._client, self.probe_seconds)
        seq = self.ledger.seq  # read after the CM's, so the lag is never overstated
        yield GaugeMetricFamily("tashi_accounting_event_sequence",
                                "Sequence of the last cluster manager event in the ledger.",
                                value=seq)
        if cm_seq is not None:
            yield GaugeMetricFamily("tashi_accounting_lag_events",
                                    "Events the cluster manager has that the ledger does not "
                                    "have yet.", value=max(0, cm_seq - seq))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
