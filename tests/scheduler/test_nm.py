"""The whole path with real processes: tashi-cm, tashi-scheduler and tashi-nm on libvirt's
test driver (hosts of different sizes), driven through the `tashi` CLI."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tashi.runtime.client import ClusterClient
from tashi.v1 import resources_pb2 as pb
from tests.harness import (
    NMProcess,
    Process,
    SchedulerProcess,
    bin_path,
    start_cm,
    stop_all,
    wait_for,
    wait_states,
)
from tests.scheduler.support import spec

RUNNING, HELD = pb.INSTANCE_STATE_RUNNING, pb.INSTANCE_STATE_HELD
SIZES = {"small": (2, 4096), "medium": (4, 8192), "large": (8, 16384)}


@pytest.fixture
def procs() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    stop_all(*reversed(started))


def tashi(cm: str, *args: str) -> str:
    done = subprocess.run([bin_path("tashi"), "--cm", cm, "--user", "root", *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def hosts_by_name(client: ClusterClient) -> dict[str, pb.Host]:
    return {h.name: h for h in client.list_hosts()}


def test_placement_with_real_node_managers(tmp_path: Path, procs: list[Process]) -> None:
    (tmp_path / "images").mkdir()
    cm = start_cm(tmp_path, images=str(tmp_path / "images"))
    procs.append(cm)
    root = cm.client()
    root.create_user("alice")
    for name, (cores, memory) in SIZES.items():
        root.create_host(name)
        procs.append(NMProcess(tmp_path / name, cm.address, name, cores=cores,
                               memory_mib=memory))
    wait_for(lambda: all(h.up for h in root.list_hosts()), what="hosts up")
    procs.append(SchedulerProcess(tmp_path, cm.address))
    alice = cm.client("alice")

    alice.create_instances(spec("web", memory=1024), count=10)
    wait_states(root, running=10)
    # Spread: fewest VMs first, ties to the host with the most free cores.
    counts = {n: h.instance_count for n, h in hosts_by_name(root).items()}
    assert counts == {"small": 2, "medium": 4, "large": 4}

    assert tashi(cm.address, "getSlots", "--cores", "1", "--memory", "1024", "-o",
                 "json").strip() == "4"
    assert json.loads(tashi(cm.address, "getSlots", "--cores", "2", "--memory", "1024",
                            "-o", "json")) == 2
    layout = {row["name"]: row for row in json.loads(tashi(cm.address, "getVmLayout",
                                                            "-o", "json"))}
    assert layout["large"]["used_cores"] == 4 and layout["large"]["cores"] == 8
    assert len(layout["small"]["instances"]) == 2
    table = tashi(cm.address, "getVmLayout")
    assert table.splitlines()[0].split()[:4] == ["id", "name", "state", "up"]

    # Bigger than any free room: Held with the reason, then placed by itself once
    # the VMs on the large host are destroyed.
    big = alice.create_instances(spec("big", cores=8, memory=2048))[0]
    held = wait_for(lambda: (i := root.get_instance(big.id)).status.state == HELD and i)
    assert held.status.reason.startswith("fits on no host (needs 8 cores, 2048 MiB)")
    on_large = [i for i in alice.list_instances() if i.status.host_name == "large"]
    for inst in on_large:
        alice.instance_action("Delete", inst.id)
    placed = wait_for(lambda: (i := root.get_instance(big.id)).status.state == RUNNING and i,
                      timeout=20, what="big running")
    assert placed.status.host_name == "large"
    assert hosts_by_name(root)["large"].used_cores == 8
