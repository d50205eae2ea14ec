"""AccountingService over real gRPC on loopback: who sees what, filters, pages,
health and reflection, and the CLI commands on top."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tashi.accounting.ledger import Ledger
from tashi.accounting.main import SERVICE_NAME
from tashi.accounting.service import AccountingServicer
from tashi.cli.accounting_cmds import parse_time
from tashi.cli.main import main as cli_main
from tashi.runtime import server
from tashi.runtime.accounting_client import AccountingClient
from tashi.runtime.client import TashiError
from tashi.v1 import accounting_pb2 as apb
from tashi.v1 import accounting_pb2_grpc as apb_grpc
from tashi.v1 import resources_pb2 as pb
from tests.accounting.support import T0, lifecycle_script, ts


@pytest.fixture
def address(tmp_path: Path) -> Iterator[str]:
    ledger = Ledger(str(tmp_path / "ledger.sqlite"))
    ledger.apply(lifecycle_script().events)
    ledger.relist([], ledger.seq, (T0 + 700) * 1_000_000_000, "test gap")
    running = server.start("127.0.0.1:0", [server.Service(
        SERVICE_NAME, AccountingServicer(ledger, ["root", "ops"]),
        apb_grpc.add_AccountingServiceServicer_to_server)])
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        running.stop(0)
        ledger.close()


def usage_of(address: str, caller: str, user: str = "", group_by: str = "user",
             end: float = 600) -> apb.GetUsageResponse:
    with AccountingClient(address, user=caller) as client:
        return client.get_usage(user=user, start=ts(0), end=ts(end), group_by=group_by)


def test_admin_sees_everyone_users_see_themselves(address: str) -> None:
    every = usage_of(address, "ops")
    assert [r.user for r in every.records] == ["alice", "bob", "carol"]
    own = usage_of(address, "bob")
    assert [r.user for r in own.records] == ["bob"]
    assert own.records[0].running.core_seconds == 390 * 4
    assert own.records[0].running.memory_mib_seconds == 390 * 2048
    assert own.records[0].instance_count == 1
    assert usage_of(address, "root", user="bob").records == own.records
    with pytest.raises(TashiError) as err:
        usage_of(address, "bob", user="alice")
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(TashiError) as err:
        usage_of(address, "")
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_usage_reports_range_seq_and_gaps(address: str) -> None:
    resp = usage_of(address, "root", group_by="host")
    assert [(r.host_name, r.instance_count) for r in resp.records] == [("h1", 3), ("h2", 3)]
    assert resp.start_time.seconds == T0 and resp.end_time.seconds == T0 + 600
    assert resp.seq == len(lifecycle_script().events)
    # The gap runs from the last event (520) to the relist (700).
    assert [g.reason for g in resp.gaps] == ["test gap"]
    assert usage_of(address, "root", end=500).gaps == []
    with pytest.raises(TashiError) as err:
        with AccountingClient(address, user="root") as client:
            client.get_usage(start=ts(10), end=ts(5))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


def list_all(address: str, caller: str, **filters: object) -> list[apb.LedgerEntry]:
    with AccountingClient(address, user=caller) as client:
        return list(client.list_events(apb.ListEventsRequest(page_size=4, **filters)))


def test_list_events_filters_and_pages(address: str) -> None:
    script = lifecycle_script()
    everything = list_all(address, "root")
    events = [e.event for e in everything if e.kind == apb.LEDGER_ENTRY_KIND_EVENT]
    assert events == script.events  # every event kept as received, in order
    assert [e.kind for e in everything][-1] == apb.LEDGER_ENTRY_KIND_GAP
    ids = [e.id for e in everything]
    assert ids == sorted(set(ids))
    of_b = list_all(address, "root", instance_id=2)
    assert {e.event.instance.id for e in of_b} == {2}
    assert len(of_b) == sum(1 for ev in script.events if ev.instance.id == 2)
    hosts = list_all(address, "root", types=[pb.EVENT_TYPE_HOST_CREATED,
                                             pb.EVENT_TYPE_HOST_UPDATED])
    assert [e.event.host.name for e in hosts] == ["h1", "h2", "h2", "h2"]
    window = list_all(address, "root", start_time=ts(100), end_time=ts(200))
    assert window and all(T0 + 100 <= e.event.time.seconds < T0 + 200 for e in window)
    assert [e.event.seq for e in list_all(address, "root", after_seq=40,
                                          kinds=[apb.LEDGER_ENTRY_KIND_EVENT])] == \
        [ev.seq for ev in script.events if ev.seq > 40]


def test_list_events_for_users_shows_only_their_own(address: str) -> None:
    mine = list_all(address, "bob")
    assert {e.event.instance.owner for e in mine if e.HasField("event")} == {"bob"}
    assert any(e.HasField("gap") for e in mine)  # gaps concern everyone
    with pytest.raises(TashiError) as err:
        list_all(address, "bob", owner="alice")
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(TashiError) as err:
        list_all(address, "root", page_token="nonsense")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_health_and_reflection(address: str) -> None:
    with grpc.insecure_channel(address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        status = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        [answer] = list(refl.ServerReflectionInfo(iter([
            reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in answer.list_services_response.service}
        assert "tashi.v1.AccountingService" in names


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        cli_main(list(argv))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def test_cli_get_usage_and_events(address: str, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    start, end = "2024-01-01T00:00:00Z", "2024-01-01T00:10:00Z"
    code, out, _ = run_cli(capsys, "getUsage", "--accounting", address, "--user", "bob",
                           "--from", start, "--to", end, "-o", "json")
    assert code == 0
    [row] = json.loads(out)
    assert (row["user"], row["running_seconds"], row["core_seconds"]) == ("bob", 390, 1560)
    # Callers are users; TASHI_ACCOUNTING points at the service.
    monkeypatch.setenv("TASHI_ACCOUNTING", address)
    code, out, _ = run_cli(capsys, "--user", "alice", "getUsage", "--from", start, "--to", end,
                           "--group-by", "instance", "-o", "csv")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("instance_id,instance_name,user,hosts,running_seconds")
    assert [ln.split(",")[0] for ln in lines[1:]] == ["1", "4"]
    code, _, err = run_cli(capsys, "--user", "alice", "getUsage", "--user", "bob",
                           "--accounting", address)
    assert code == 1 and "PERMISSION_DENIED" in err
    code, out, err = run_cli(capsys, "getUsage", "--accounting", address, "--to", "2024-01-02")
    assert code == 0 and "missed events" in err and "carol" in out
    code, out, _ = run_cli(capsys, "getEvents", "--accounting", address, "--instance", "5",
                           "-o", "json")
    assert code == 0
    rows = json.loads(out)
    assert [r["state"] for r in rows] == ["Pending", "Activating", "Running", "Orphaned",
                                          "Destroying", "Destroying"]
    assert rows[-1]["type"] == "instance_deleted"
    code, out, _ = run_cli(capsys, "getEvents", "--accounting", address, "--kind", "gap")
    assert code == 0 and "test gap" in out
    code, _, err = run_cli(capsys, "getEvents", "--accounting", address, "--type", "nonsense")
    assert code == 2 and "instance_updated" in err


def test_parse_time_forms() -> None:
    from datetime import UTC, datetime

    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_time("2024-05-01", now).seconds == int(datetime(2024, 5, 1, tzinfo=UTC)
                                                        .timestamp())
    assert parse_time("7d", now).seconds == int(now.timestamp()) - 7 * 86400
    assert parse_time("90m", now).seconds == int(now.timestamp()) - 5400
    assert parse_time("now", now).seconds == int(now.timestamp())
    assert parse_time("2024-05-01T14:00+02:00", now).seconds == int(now.timestamp())
