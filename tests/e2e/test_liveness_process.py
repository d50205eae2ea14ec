"""A real tashi-nm beats the CM's liveness process once the CM names one, goes
back to the CM's own Heartbeat when that process dies, and to the process again
when the CM has started it anew; its host stays up throughout (cm/beats.py).
Real processes: tashi-cm with --beat-listen, and a tashi-nm on libvirt's test
driver."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from bench.procs import children
from tashi.cm.beats import RESTART_SECONDS
from tests.harness import NMProcess, metrics_address, scrape, start_cm, up_host, wait_for

pytestmark = [pytest.mark.slow]

HEARTBEAT = 0.3


def counts(address: str) -> tuple[float, float]:
    """(beats the liveness process took, Heartbeats the CM took)."""
    samples = scrape(address)
    heartbeats = sum(v for (name, labels), v in samples.items()
                     if name == "grpc_server_handled_total"
                     and ("grpc_method", "Heartbeat") in labels)
    return samples.get(("tashi_cm_beats_total", ()), 0.0), heartbeats


def liveness_pid(cm_pid: int) -> int:
    """The CM's child that serves LivenessService (the spawn's resource tracker is
    another child)."""
    return int(wait_for(lambda: next(iter(children(cm_pid, "spawn_main")), 0), timeout=20,
                        what="the liveness process"))


def test_a_node_manager_beats_the_liveness_process_and_survives_its_death(
        tmp_path: Path) -> None:
    cm = start_cm(tmp_path, beat_listen="127.0.0.1:0", expire_host_seconds=3,
                  metrics_listen="127.0.0.1:0")
    nm = None
    try:
        root = cm.client()
        address = metrics_address(cm)
        first = liveness_pid(cm.proc.pid)
        wait_for(lambda: "heartbeats heard by a process of their own" in cm.log_path.read_text(),
                 timeout=20, what="the liveness process serving")
        root.create_host("h1")
        nm = NMProcess(tmp_path / "nm1", cm.address, "h1", heartbeat_seconds=HEARTBEAT)
        up_host(root, "h1")
        beats0, _ = counts(address)
        wait_for(lambda: counts(address)[0] >= beats0 + 5, timeout=10,
                 what="beats at the liveness process")
        b1, h1 = counts(address)
        time.sleep(2.0)
        b2, h2 = counts(address)
        assert b2 - b1 >= 4 and h2 == h1, "the NM beats the process, not the CM"

        os.kill(first, signal.SIGKILL)
        t0 = time.monotonic()
        wait_for(lambda: counts(address)[1] > h2 + 3, timeout=10,
                 what="heartbeats back at the CM itself")
        second = liveness_pid(cm.proc.pid)
        assert second != first
        b3, _ = counts(address)
        wait_for(lambda: counts(address)[0] > b3 + 3, timeout=RESTART_SECONDS + 15,
                 what="beats at the new liveness process")
        assert time.monotonic() - t0 >= RESTART_SECONDS - 1
        _, h4 = counts(address)
        time.sleep(1.5)
        assert counts(address)[1] <= h4 + 1, "back at the process, not the CM"
        host = root.get_host("h1")
        assert host.up
        log = cm.log_path.read_text()
        assert "stopped answering" not in log, "h1 never went down"
        assert "exited with -9; starting it again" in log
        assert "heartbeats go to the cluster manager itself" in nm.log_path.read_text()
    finally:
        if nm is not None:
            nm.stop()
        cm.stop()
