"""`tashi getSlots` and `tashi getVmLayout` against a real CM (synthetic hosts)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tashi.v1 import placement_pb2 as pl
from tashi.v1 import resources_pb2 as pb
from tests.harness import bin_path, start_cm, stop_all
from tests.scheduler.support import add_hosts, spec


def run(cm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([bin_path("tashi"), "--cm", cm, "--user", "root", *args],
                          capture_output=True, text=True, timeout=60)


def test_slots_count_only_up_normal_hosts_and_layout_lists_vms(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    cm = start_cm(tmp_path, images=str(tmp_path / "images"), expire_host_seconds=3600)
    try:
        root = cm.client()
        hosts = add_hosts(root, [(8, 8192), (4, 16384), (16, 4096), (16, 16384)])
        root.set_host_state("h3", pb.HOST_STATE_DRAINED)
        root.create_host("never-registered")  # down
        vm = root.create_instances(spec("a", cores=3, memory=1024))[0]
        assert root.activate([pl.Placement(instance_id=vm.id, host_id=hosts[0].id)]) \
            .results[0].accepted

        # h0: 5 cores, 7168 MiB free -> 2; h1: 4, 16384 -> 2; h2: 16, 4096 -> 2.
        done = run(cm.address, "getSlots", "--cores", "2", "--memory", "2048", "-o", "json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == 6
        table = run(cm.address, "getSlots", "--cores", "2", "--memory", "2048").stdout
        header, _, row = table.splitlines()
        assert header.split() == ["slots", "cores", "memory_mib", "hosts"]
        assert row.split() == ["6", "2", "2048", "3"]
        assert json.loads(run(cm.address, "getSlots", "--cores", "9", "--memory", "1",
                              "-o", "json").stdout) == 1  # only h2 has 9 free cores

        bad = run(cm.address, "getSlots", "--cores", "0", "--memory", "1024")
        assert bad.returncode == 2 and "at least 1" in bad.stderr

        layout = json.loads(run(cm.address, "getVmLayout", "-o", "json").stdout)
        rows = {r["name"]: r for r in layout}
        assert rows["h0"]["instances"] == ["a"]
        assert (rows["h0"]["used_cores"], rows["h0"]["cores"]) == (3, 8)
        assert (rows["h0"]["used_memory_mib"], rows["h0"]["memory_mib"]) == (1024, 8192)
        assert rows["h3"]["state"] == "Drained" and rows["never-registered"]["up"] is False
    finally:
        stop_all(cm)
