"""Heartbeats heard by the CM's liveness process (cm/beats.py): they keep a host up
exactly as Heartbeat does, only with the token of the host's latest registration,
and never for a host the CM marked down or while the CM itself is not running."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tashi.cm import beats
from tashi.runtime.client import ClusterClient, LivenessClient, TashiError
from tashi.runtime.errors import ServiceError
from tashi.v1 import node_registry_pb2 as nr
from tests.harness import InProcCM, register_host, wait_for


@pytest.fixture
def cm(tmp_path: Path) -> Iterator[InProcCM]:
    cm = InProcCM(tmp_path, beat_listen="127.0.0.1:0", expire_host_seconds=1.0)
    try:
        wait_for(lambda: cm.cluster.beats.port, timeout=20, what="the liveness process")
        yield cm
    finally:
        cm.stop()


def ticket(root: ClusterClient, name: str, add: bool = True) -> nr.RegisterHostResponse:
    reg = register_host(root, name, add=add)
    assert reg.beat_port and len(reg.beat_token) == beats.TOKEN
    return reg


def beat(client: LivenessClient, host_id: int, token: bytes) -> bool:
    return client.call(client.liveness.Beat, nr.BeatRequest(host_id=host_id, token=token)
                       ).registered


def test_beats_to_the_liveness_process_keep_a_host_up(cm: InProcCM) -> None:
    root = cm.client()
    reg = ticket(root, "h1")
    with LivenessClient(root.liveness_address(reg.beat_port)) as liveness:
        counted = cm.cluster.beats.beats()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5:  # 2.5 expiries
            assert beat(liveness, reg.host.id, reg.beat_token)
            time.sleep(0.3)
        host = root.get_host("h1")
        assert host.up and not host.decayed
        assert cm.cluster.beats.beats() >= counted + 8
        # The CM's own Heartbeat names the same process and token.
        again = root.call(root.registry.Heartbeat, nr.HeartbeatRequest(name="h1"))
        assert (again.beat_port, again.beat_token) == (reg.beat_port, reg.beat_token)
        t0 = time.monotonic()
        wait_for(lambda: not root.get_host("h1").up, timeout=5, what="h1 down once silent")
        assert time.monotonic() - t0 < 2.5
        time.sleep(0.6)  # a round tells the process the host is down
        assert not beat(liveness, reg.host.id, reg.beat_token), "down: register again"
        back = ticket(root, "h1", add=False)
        assert back.beat_token != reg.beat_token
        assert beat(liveness, back.host.id, back.beat_token)


def test_a_beat_counts_only_with_the_latest_token_of_that_host(cm: InProcCM) -> None:
    root = cm.client()
    first = ticket(root, "h1")
    other = ticket(root, "h2")
    latest = ticket(root, "h1", add=False)  # a new registration: the first token is void
    table, hid = cm.cluster.beats.table, first.host.id
    with LivenessClient(root.liveness_address(first.beat_port)) as liveness:
        heard = table.heard[hid]
        for host_id, token in ((hid, first.beat_token), (hid, other.beat_token),
                               (hid, b""), (hid, bytes(beats.TOKEN)), (hid, b"x" * 1_000_000),
                               (hid, latest.beat_token[:-1]), (0, latest.beat_token),
                               (-1, latest.beat_token), (beats.SLOTS, latest.beat_token),
                               (2**63 - 1, latest.beat_token), (other.host.id, latest.beat_token)):
            assert not beat(liveness, host_id, token), (host_id, token[:20])
        assert table.heard[hid] == heard
        assert beat(liveness, hid, latest.beat_token)
        assert table.heard[hid] > heard
        with pytest.raises(TashiError) as too_big:  # the server's message limit holds
            beat(liveness, hid, b"x" * (64 << 20))
        assert too_big.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_deleted_host_is_forgotten_by_the_liveness_process(cm: InProcCM) -> None:
    root = cm.client()
    reg = ticket(root, "h1")
    with LivenessClient(root.liveness_address(reg.beat_port)) as liveness:
        assert beat(liveness, reg.host.id, reg.beat_token)
        wait_for(lambda: not root.get_host("h1").up, timeout=5, what="h1 down")
        root.delete_host("h1")
        time.sleep(0.6)
        assert not any(cm.cluster.beats.table.token(reg.host.id))
        assert not beat(liveness, reg.host.id, reg.beat_token)


@pytest.mark.parametrize(("lease", "expire", "stale"), [(0.0, 10.0, 10.0), (0.0, 1.0, 5.0),
                                                      (1.5, 10.0, 1.5)])
def test_a_liveness_process_whose_cm_stopped_running_turns_hosts_away(
        lease: float, expire: float, stale: float) -> None:
    """A CM paused (SIGSTOP, a frozen VM) while a standby takes over: its liveness
    process must not go on telling hosts all is well, or they would never beat the
    CM that leads now.  Once the CM's pulse is older than its lease (with a shared
    store), or else the expiry (at least 5 s), it answers UNAVAILABLE, and the node
    manager beats the CM itself, which finds the leader."""
    handle = beats.Beats("127.0.0.1:0", None, False, "INFO", auto=True, lease=lease)
    token = handle.table.issue(7)
    handle.merge([(7, True)], {}, 0.5, expire)
    servicer = beats.LivenessServicer(handle.table)
    req = nr.BeatRequest(host_id=7, token=token)
    handle.table.meta[beats.PULSE] = time.monotonic() - (stale - 0.3)
    assert servicer.Beat(req, None).registered
    handle.table.meta[beats.PULSE] = time.monotonic() - (stale + 0.3)
    with pytest.raises(ServiceError) as refused:
        servicer.Beat(req, None)
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    handle.pulse()
    assert servicer.Beat(req, None).registered


def test_a_liveness_process_that_cannot_listen_leaves_the_heartbeats_to_the_cm(
        tmp_path: Path) -> None:
    """--beat-listen on a port already taken: the CM says so once, never names a
    port, and keeps hearing Heartbeat itself."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cm = InProcCM(tmp_path, beat_listen=f"127.0.0.1:{port}", expire_host_seconds=1.0)
        try:
            beats_ = cm.cluster.beats
            wait_for(lambda: beats_._failed, timeout=20, what="the process to give up")
            assert f"cannot serve heartbeats on 127.0.0.1:{port}" in beats_._failed
            root = cm.client()
            reg = register_host(root, "h1")
            assert (reg.beat_port, reg.beat_token) == (0, b"")
            for _ in range(6):  # 1.8 s: the host stays up on Heartbeat alone
                beat = root.call(root.registry.Heartbeat, nr.HeartbeatRequest(name="h1"))
                assert beat.registered and beat.beat_port == 0
                time.sleep(0.3)
            assert root.get_host("h1").up
            assert beats_._proc is None or not beats_._proc.is_alive()
        finally:
            cm.stop()
