"""A peer that stops answering without closing its connection is noticed through
keepalive (issue 16, silent failures): a watch on a SIGSTOPped cluster manager
ends UNAVAILABLE within keepalive's bound (runtime/server.py), not at the next
resync, and the same client works again once the CM does."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc
import pytest

from tashi.runtime.client import ClusterClient, TashiError
from tashi.runtime.server import KEEPALIVE_SECONDS, KEEPALIVE_TIMEOUT_SECONDS
from tests.harness import start_cm, vm

pytestmark = [pytest.mark.slow]


def test_a_silent_cluster_manager_is_noticed_within_the_keepalive_bound(
        tmp_path: Path) -> None:
    cm = start_cm(tmp_path)
    client = ClusterClient(cm.address, timeout=5)
    ended: list[tuple[float, TashiError | None]] = []
    try:
        client.create_instances(vm("a"))
        stream = client.watch_events(0)
        first = threading.Event()

        def watch() -> None:
            try:
                for _batch in stream:
                    first.set()
                ended.append((time.monotonic(), None))
            except TashiError as exc:
                ended.append((time.monotonic(), exc))

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        assert first.wait(10), "the watch replayed the history"
        cm.proc.send_signal(signal.SIGSTOP)  # alive, connection open, answering nothing
        paused = time.monotonic()
        bound = KEEPALIVE_SECONDS + KEEPALIVE_TIMEOUT_SECONDS + 5
        t.join(bound + 5)
        assert ended, f"the watch did not notice a silent CM in {bound + 5} s"
        at, err = ended[0]
        assert err is not None and err.code == grpc.StatusCode.UNAVAILABLE, err
        assert at - paused <= bound, f"noticed after {at - paused:.1f} s"
        cm.proc.send_signal(signal.SIGCONT)
        assert [i.name for i in client.list_instances()] == ["a"], "and it recovers"
    finally:
        cm.proc.send_signal(signal.SIGCONT)
        client.close()
        cm.stop()
