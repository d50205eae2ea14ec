"""A cluster manager SIGKILLed in the middle of 1,000 creates and destroys, driven with
request ids and retries, restarts with exactly the acknowledged instances."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import grpc
import pytest

from tashi.runtime.client import ClusterClient, TashiError
from tests.harness import db_url, free_port, start_cm_at, vm


@pytest.mark.slow
def test_sigkill_loses_nothing_acknowledged(tmp_path: Path) -> None:
    port = free_port()
    db = db_url(tmp_path)

    # A fixed port lets the client's channel reconnect on its own after restarts.
    proc = start_cm_at(tmp_path, port, db=db)
    client = ClusterClient(f"127.0.0.1:{port}", user="root", timeout=5)
    rng = random.Random(7)
    ops: list[tuple[str, str]] = []
    created: list[str] = []
    for i in range(1000):
        if created and rng.random() < 0.3:
            ops.append(("destroy", created.pop(rng.randrange(len(created)))))
        else:
            name = f"d{i}"
            created.append(name)
            ops.append(("create", name))
    kills = 0
    stop_killer = threading.Event()
    current = {"proc": proc}

    def killer() -> None:
        nonlocal kills
        while not stop_killer.wait(rng.uniform(0.2, 0.6)):
            current["proc"].kill()
            kills += 1
            current["proc"] = start_cm_at(tmp_path, port, db=db)

    t = threading.Thread(target=killer)
    t.start()
    acked: set[str] = set()
    retries = 0
    try:
        for index, (op, name) in enumerate(ops):
            rid = f"op-{index}"
            while True:
                try:
                    if op == "create":
                        client.create_instances(vm(name, 1, 64),
                                                request_id=rid)
                        acked.add(name)
                    else:
                        client.instance_action("Delete", name, request_id=rid)
                        acked.discard(name)
                    break
                except TashiError as exc:
                    if exc.code not in (grpc.StatusCode.UNAVAILABLE,
                                        grpc.StatusCode.DEADLINE_EXCEEDED,
                                        grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
                                        grpc.StatusCode.INTERNAL):
                        raise
                    retries += 1
                    time.sleep(0.05)
            if kills >= 4:
                stop_killer.set()
    finally:
        stop_killer.set()
        t.join()
    try:
        names = [i.name for i in client.list_instances()]
        assert kills >= 3, f"the CM was killed only {kills} times"
        assert len(names) == len(set(names)), "an instance was duplicated"
        assert set(names) == acked, (
            f"lost {sorted(acked - set(names))[:5]}, extra {sorted(set(names) - acked)[:5]}")
        print(f"{kills} kills, {retries} retries, {len(acked)} instances")
    finally:
        client.close()
        current["proc"].stop()
