"""The accounting service's metrics: a real follower against an in-process CM."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tashi.accounting.follower import Follower
from tashi.accounting.metrics import AccountingCollector, CountingLedger
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb
from tests.harness import InProcCM, wait_for


@pytest.fixture
def cm(tmp_path: Path) -> Iterator[InProcCM]:
    cm = InProcCM(tmp_path)
    cm.client().create_user("alice")
    try:
        yield cm
    finally:
        cm.stop()


def cm_seq(cm: InProcCM) -> int:
    root = cm.client()
    return int(root.call(root.cm.ListHosts, cmpb.ListHostsRequest()).seq)


def test_events_ingested_and_lag(cm: InProcCM, tmp_path: Path) -> None:
    alice = cm.client("alice")
    alice.create_instances(
        pb.Instance(name="web", spec=pb.InstanceSpec(cores=1, memory_mib=512)), count=5)
    ledger = CountingLedger(str(tmp_path / "ledger.sqlite"))
    collector = AccountingCollector(ledger, cm.address)
    reg = CollectorRegistry()
    reg.register(collector)
    follower = Follower(ledger, cm.address)
    follower.start()
    try:
        top = cm_seq(cm)
        wait_for(lambda: ledger.seq == top, what="the ledger caught up")
        assert reg.get_sample_value("tashi_accounting_events_ingested_total") == top
        assert reg.get_sample_value("tashi_accounting_event_sequence") == top
        assert reg.get_sample_value("tashi_accounting_lag_events") == 0
    finally:
        follower.stop()
    # The follower stopped: three more events are the lag, nothing more is ingested.
    for name in ("a", "b", "c"):
        alice.create_instances(
            pb.Instance(name=name, spec=pb.InstanceSpec(cores=1, memory_mib=512)))
    assert reg.get_sample_value("tashi_accounting_lag_events") == 3
    assert reg.get_sample_value("tashi_accounting_events_ingested_total") == top

    # Restarted on the same ledger: the counter is this process's, the sequence durable.
    ledger.close()
    again = CountingLedger(str(tmp_path / "ledger.sqlite"))
    fresh = AccountingCollector(again, cm.address)
    reg2 = CollectorRegistry()
    reg2.register(fresh)
    assert reg2.get_sample_value("tashi_accounting_events_ingested_total") == 0
    assert reg2.get_sample_value("tashi_accounting_event_sequence") == top
    cm.stop()
    assert reg2.get_sample_value("tashi_accounting_lag_events") is None  # CM unknown
    for c in (collector, fresh):
        c.close()
    again.close()
