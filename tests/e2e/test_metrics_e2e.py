"""A real Prometheus scraping a real local cluster (CM, NM on libvirt's test driver,
scheduler, accounting), queried through its HTTP API for a per-VM metric and the
gRPC request counters, with the shipped alert rules loaded."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tashi.v1 import resources_pb2 as pb
from tests.harness import (
    NMProcess,
    Process,
    Site,
    bin_path,
    free_port,
    metrics_address,
    start_cm,
    wait_for,
)

PROMETHEUS = "/usr/bin/prometheus"
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "tashi-alerts.yml"
MIB = 1024 * 1024

pytestmark = [pytest.mark.system, pytest.mark.slow,
              pytest.mark.skipif(not Path(PROMETHEUS).exists(),
                                 reason="needs Debian's prometheus package")]


class Prometheus:
    """Debian's prometheus binary run by hand on loopback with a throw-away data dir."""

    def __init__(self, workdir: Path, targets: dict[str, str]) -> None:
        workdir.mkdir()
        rules = workdir / "tashi-alerts.yml"
        shutil.copyfile(RULES, rules)
        jobs = "".join(f"  - job_name: {job}\n    static_configs:\n"
                       f"      - targets: [\"{addr}\"]\n" for job, addr in targets.items())
        config = workdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                          "  evaluation_interval: 1s\nrule_files:\n  - tashi-alerts.yml\n"
                          f"scrape_configs:\n{jobs}")
        self.address = f"127.0.0.1:{free_port()}"
        self._log = open(workdir / "prometheus.log", "ab")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address={self.address}", "--storage.tsdb.retention.time=1h"],
            stdout=self._log, stderr=self._log, cwd=workdir)
        self.log_path = workdir / "prometheus.log"
        try:
            wait_for(self._ready, timeout=60, what="prometheus ready")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError("prometheus exited:\n" + self.log_path.read_text()[-3000:])
        try:
            with urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        url = f"http://{self.address}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> dict[str, float]:
        """Instant query: {job/instance-free label text: value}."""
        out = {}
        for r in self.api("query", query=expr)["result"]:
            labels = {k: v for k, v in r["metric"].items() if k not in ("instance",)}
            out[json.dumps(labels, sort_keys=True)] = float(r["value"][1])
        return out

    def value(self, expr: str) -> float | None:
        found = list(self.query(expr).values())
        assert len(found) <= 1, found
        return found[0] if found else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@pytest.fixture
def started() -> Iterator[list[Any]]:
    procs: list[Any] = []
    yield procs
    for p in reversed(procs):
        p.stop()


def test_prometheus_scrapes_the_cluster(tmp_path: Path, images: Path,
                                        started: list[Any]) -> None:
    site = Site(tmp_path / "ca")  # every service and client over mutual TLS
    cm = start_cm(tmp_path, site=site, images=str(images), metrics_listen="127.0.0.1:0")
    started.append(cm)
    root, alice = cm.client(), cm.client("alice")
    root.create_user("alice")
    root.create_host("node1")
    nm = NMProcess(tmp_path / "node1", cm.address, "node1", site=site, images=images,
                   extra=["--metrics-listen", "127.0.0.1:0"])
    started.append(nm)
    acct = Process([bin_path("tashi-accounting"), "--listen", "127.0.0.1:0", "--cm", cm.address,
                    "--db", str(tmp_path / "ledger.sqlite"), "--metrics-listen", "127.0.0.1:0",
                    *site.flags("service", "tashi-accounting")],
                   tmp_path / "accounting.log")
    started.append(acct)
    sched = Process([bin_path("tashi-scheduler"), "--cm", cm.address,
                     "--metrics-listen", "127.0.0.1:0", *site.flags("service", "tashi-scheduler")],
                    tmp_path / "scheduler.log",
                    ready=re.compile(r"connected to (\S+:\d+)"))
    started.append(sched)
    targets = {"tashi-cm": metrics_address(cm), "tashi-nm": metrics_address(nm),
               "tashi-accounting": metrics_address(acct),
               "tashi-scheduler": metrics_address(sched)}

    alice.create_instances(pb.Instance(name="web", spec=pb.InstanceSpec(
        cores=1, memory_mib=256, disks=[pb.Disk(uri="base.qcow2")])))
    wait_for(lambda: alice.get_instance("web").status.state == pb.INSTANCE_STATE_RUNNING,
             timeout=30, what="web running")
    web_id = str(alice.get_instance("web").id)

    prom = Prometheus(tmp_path / "prometheus", targets)
    started.append(prom)
    wait_for(lambda: len(prom.query("up == 1")) == 4, timeout=30,
             what=f"all four targets up: {prom.query('up')}")

    # A per-VM metric from the NM: the memory the VM was created with.
    memory = wait_for(lambda: prom.value(
        'tashi_vm_memory_usage_bytes{job="tashi-nm", instance_name="web", owner="alice"}'),
        timeout=30, what="the VM's memory in Prometheus")
    assert memory == 256 * MIB
    assert prom.query('tashi_vm_memory_usage_bytes{job="tashi-nm"}') == {
        json.dumps({"__name__": "tashi_vm_memory_usage_bytes", "instance_id": web_id,
                    "instance_name": "web", "job": "tashi-nm", "owner": "alice"},
                   sort_keys=True): 256 * MIB}
    # CPU seconds is a counter Prometheus can rate.
    wait_for(lambda: (prom.value('rate(tashi_vm_cpu_time_seconds_total{instance_name="web"}'
                                 '[5s])') or 0) > 0, timeout=30, what="a CPU rate")

    # The gRPC request counters: the CM took the create, the NM the start (the CM
    # sends a host's starts in one StartVms call).
    assert prom.value('grpc_server_handled_total{job="tashi-cm", grpc_method="CreateInstance",'
                      ' grpc_code="OK"}') == 1
    assert prom.value('grpc_server_handled_total{job="tashi-nm", grpc_method="StartVms",'
                      ' grpc_code="OK"}') == 1
    assert (prom.value('sum(grpc_server_handled_total{job="tashi-cm", grpc_method="Heartbeat"})')
            or 0) >= 1
    # The handling-time histogram answers a latency quantile (a rate needs two scrapes).
    p99 = wait_for(lambda: prom.value('histogram_quantile(0.99, sum by (le) (rate('
                                      'grpc_server_handling_seconds_bucket{job="tashi-cm"}'
                                      '[30s])))'), timeout=30, what="a p99 handling time")
    assert 0 < p99 <= 10

    # The other services' own metrics, and the CM's view of the host and instance.
    assert prom.value('tashi_scheduler_placements_total') == 1
    assert prom.value('tashi_cm_instances{state="Running", owner="alice"}') == 1
    assert prom.value('tashi_cm_host_up{host="node1"}') == 1
    assert prom.value('tashi_nm_host_allocated_memory_bytes') == 256 * MIB
    wait_for(lambda: prom.value("tashi_accounting_lag_events") == 0, timeout=30,
             what="accounting caught up")

    # The shipped alert rules load and evaluate; none fires on a healthy cluster.
    groups = prom.api("rules")["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert {"TashiHostDown", "TashiNodeManagerNotHeardFrom", "TashiSchedulerFallingBehind",
            "TashiAccountingFallingBehind", "TashiHeldInstancesWaiting"} <= set(rules)
    wait_for(lambda: all(r.get("lastEvaluation", "").startswith("2")
                         for g in prom.api("rules")["groups"] for r in g["rules"]),
             timeout=30, what="every rule evaluated")
    assert all(r["health"] == "ok" for r in
               (r for g in prom.api("rules")["groups"] for r in g["rules"])), groups
    assert prom.api("alerts")["alerts"] == []

    prom.stop()
    assert prom.proc.returncode == 0
