"""A peer that stops answering without closing its connection is noticed through
keepalive (issue 16, silent failures): a watch on a SIGSTOPped cluster manager
ends UNAVAILABLE within keepalive's bound (runtime/server.py), not at the next
resync, and the same client works again once the CM does."""

from __future__ import annotations

import inspect
import re
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest

from tashi.runtime import rpc
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


SERVICE_FOLDERS = ("runtime", "cm", "nm", "scheduler", "accounting", "cli", "bench", "tools")
OPENS_A_CHANNEL = re.compile(r"\b(?:insecure_channel|secure_channel|aio\.\w*[cC]hannel)\s*\(")


def test_every_client_channel_is_opened_with_the_keepalive_options() -> None:
    """Every follower (scheduler, accounting, NMs, the CLI, the CM's calls to NMs) gets
    its channel from runtime.rpc.channel, which passes CLIENT_KEEPALIVE_OPTIONS: a
    channel opened anywhere else would hold a silent peer's stream for ever."""
    root = Path(__file__).resolve().parents[2]
    opened = sorted(
        f"{path.relative_to(root)}:{n}"
        for folder in SERVICE_FOLDERS for path in (root / folder).rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if OPENS_A_CHANNEL.search(line))
    assert [o.split(":")[0] for o in opened] == ["runtime/rpc.py", "runtime/rpc.py"], opened
    source = inspect.getsource(rpc.channel)
    assert "*CLIENT_KEEPALIVE_OPTIONS" in source and source.count("options=options") == 2
