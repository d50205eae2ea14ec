"""The heartbeats a CM asks for are bounded by its --heartbeat-rate: a large fleet
beats less often per host, and the expiry and decay stretch with the interval."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tashi.cm.cadence import Cadence, cadence, settle
from tashi.cm.config import CMConfig
from tashi.v1 import node_registry_pb2 as nr
from tests.harness import InProcCM, register_host, scrape, wait_for


def test_the_interval_grows_with_the_fleet_and_the_expiry_with_it() -> None:
    cfg = CMConfig()  # 200 beats/s, expiry 10 s, decay 5 s
    assert cadence(cfg, 20) == Cadence(interval=0.1, expire=10.0, decay=5.0)
    assert cadence(cfg, 400) == Cadence(interval=2.0, expire=10.0, decay=5.0)
    assert cadence(cfg, 1000) == Cadence(interval=5.0, expire=25.0, decay=12.5)
    cfg.heartbeat_rate = 0  # no limit
    assert cadence(cfg, 100_000) == Cadence(interval=0.0, expire=10.0, decay=5.0)


def test_a_cm_asks_its_hosts_for_fewer_beats_and_waits_longer_for_them(
        tmp_path: Path) -> None:
    """20 hosts at 40 beats/s: each is asked to beat every 0.5 s, and a silent one
    goes down after 2.5 s (five of those beats), not after the 1 s configured."""
    cm = InProcCM(tmp_path, expire_host_seconds=1.0, decay_seconds=0.5, heartbeat_rate=40,
                  metrics_listen="127.0.0.1:0")
    stop = threading.Event()
    try:
        root = cm.client()
        names = [f"m{i}" for i in range(20)]
        for name in names:
            register_host(root, name)
        wait_for(lambda: cm.cluster.cadence.interval == 0.5, timeout=3,
                 what="the liveness monitor to see 20 hosts")
        beat = root.call(root.registry.Heartbeat, nr.HeartbeatRequest(name="m1"))
        assert beat.registered and beat.heartbeat_interval_seconds == 0.5
        again = register_host(root, "m1", add=False)
        assert (again.heartbeat_interval_seconds, again.expire_after_seconds,
                again.heartbeat_seconds, again.expire_host_seconds) == (0.5, 2.5, 1, 3)
        samples = scrape(cm.cm.metrics.address)
        assert samples[("tashi_cm_heartbeat_interval_seconds", ())] == 0.5
        assert samples[("tashi_cm_host_expiry_seconds", ())] == 2.5

        def keep_beating() -> None:
            while not stop.wait(0.3):
                for name in names[1:]:
                    root.call(root.registry.Heartbeat, nr.HeartbeatRequest(name=name))

        register_host(root, "m0", add=False)  # m0's last word: silent from here
        t0 = time.monotonic()
        beater = threading.Thread(target=keep_beating, daemon=True)
        beater.start()
        time.sleep(1.8)  # past the configured 1 s expiry (and 0.5 s decay) and a round
        m0 = root.get_host("m0")
        assert m0.up, "down at the configured expiry, not the stretched one"
        assert m0.decayed, "silent past the stretched decay (1.25 s)"
        wait_for(lambda: not root.get_host("m0").up, timeout=4, what="m0 down")
        assert 2.5 <= time.monotonic() - t0 < 4.0
        assert all(h.up for h in root.list_hosts() if h.name != "m0")
    finally:
        stop.set()
        cm.stop()


def test_a_shrinking_fleet_asks_for_the_shorter_interval_at_once_and_keeps_the_expiry_a_while(
        ) -> None:
    big, small = Cadence(5.0, 25.0, 12.5), Cadence(0.1, 10.0, 5.0)
    assert settle(small, None, big, 100.0) == (big, None), "a longer expiry at once"
    held, since = settle(big, None, small, 100.0)
    assert (held, since) == (Cadence(0.1, 25.0, 12.5), 100.0)
    assert settle(held, since, small, 124.9) == (held, 100.0), "within the old expiry"
    assert settle(held, since, small, 125.0) == (small, None), "after it"
    assert settle(held, since, big, 110.0) == (big, None), "the fleet grew back"


def test_hosts_beating_at_the_old_pace_survive_the_fleet_shrinking(tmp_path: Path) -> None:
    """20 hosts at 10 beats/s beat every 2 s and expire after 10 s; 18 are deleted:
    the 2 left are asked for 0.2 s at once, yet one still at the old pace (its next
    beat 2 s away, past the new 1 s expiry) is not taken for dead."""
    cm = InProcCM(tmp_path, expire_host_seconds=1.0, decay_seconds=0.5, heartbeat_rate=10)
    try:
        root = cm.client()
        for i in range(20):
            register_host(root, f"s{i}")
        wait_for(lambda: cm.cluster.cadence.interval == 2.0, timeout=3, what="20 hosts seen")
        for i in range(2, 20):
            root.delete_host(f"s{i}")
        for name in ("s0", "s1"):
            root.call(root.registry.Heartbeat, nr.HeartbeatRequest(name=name))
        wait_for(lambda: cm.cluster.cadence.interval == 0.2, timeout=3, what="2 hosts seen")
        assert cm.cluster.cadence.expire == 10.0, "the old expiry, for the old pace"
        time.sleep(1.9)  # s0 and s1 beat at the old pace: their next beat is 2 s away
        assert all(h.up for h in root.list_hosts())
        beat = root.call(root.registry.Heartbeat, nr.HeartbeatRequest(name="s0"))
        assert beat.registered and beat.heartbeat_interval_seconds == 0.2
    finally:
        cm.stop()
