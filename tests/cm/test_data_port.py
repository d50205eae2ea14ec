"""The image data port (cm/data_port.py, runtime/data_port.py) as an attacker
and a careless client meet it: tickets that are forged, used twice or expired;
damaged, short and silent uploads; a hostile server's frames; TLS; and a CM
without a data port, where clients fall back to the gRPC streams."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import blake3
import grpc
import pytest

from tashi.cm import data_port as server_side
from tashi.cm import image_transfer
from tashi.runtime import bulk
from tashi.runtime import data_port as wire
from tashi.runtime.certs import create_ca, issue
from tashi.runtime.client import ClusterClient, TashiError
from tashi.runtime.tls import Tls
from tashi.v1 import cluster_manager_pb2 as cmpb
from tests.cm.test_image_ops import MIB, hidden, random_file, refused
from tests.harness import InProcCM, inproc_cm, wait_for

C = grpc.StatusCode
UPLOAD, DOWNLOAD = cmpb.IMAGE_TRANSFER_KIND_UPLOAD, cmpb.IMAGE_TRANSFER_KIND_DOWNLOAD


@pytest.fixture
def cmx(tmp_path: Path) -> Iterator[InProcCM]:
    with inproc_cm(tmp_path, quota_image_bytes=8 * MIB) as cm:
        root = cm.client()
        root.create_user("alice")
        root.create_user("bob")
        yield cm


def ticket(client: ClusterClient, kind: int, name: str, size: int = 0
           ) -> cmpb.OpenImageTransferResponse:
    return client.call(client.cm.OpenImageTransfer, cmpb.OpenImageTransferRequest(
        kind=kind, name=name, size_bytes=size))  # type: ignore[arg-type]


def raw(port: int, text: bytes) -> socket.socket:
    """A connection that sends `text` as its ticket and nothing more."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(text)
    return sock


def closed_on(sock: socket.socket) -> bool:
    """Whether the server ends the connection without a word (a close or a reset)."""
    with sock:
        try:
            return sock.recv(1) == b""
        except ConnectionResetError:
            return True


def upload(port: int, tk: str, data: bytes, digest: bytes | None = None) -> None:
    """What runtime/data_port.py sends, with the digest of the caller's choosing."""
    with raw(port, tk.encode()) as sock:
        go = wire.read_frame(sock)
        wire._raise_for(go)
        sock.sendall(data)
        sock.sendall(blake3.blake3(data).digest() if digest is None else digest)
        wire._raise_for(wire.read_frame(sock))


def test_tickets_are_single_use_bound_and_checked_first(cmx: InProcCM, tmp_path: Path) -> None:
    alice, bob = cmx.client("alice"), cmx.client("bob")
    images = Path(cmx.cfg.images)
    data = os.urandom(MIB)
    # Refused before any ticket exists: a bad name, a size past the limit, a quota.
    refused(lambda: ticket(alice, UPLOAD, "../etc/x", len(data)), C.INVALID_ARGUMENT)
    refused(lambda: ticket(alice, UPLOAD, "x.raw", 0), C.INVALID_ARGUMENT, "size_bytes")
    refused(lambda: ticket(alice, UPLOAD, "x.raw", 9 * MIB), C.RESOURCE_EXHAUSTED, "quota")
    refused(lambda: ticket(alice, 0, "x.raw", 1), C.INVALID_ARGUMENT, "kind")
    refused(lambda: ticket(bob, DOWNLOAD, "nothing.raw"), C.NOT_FOUND)
    tk = ticket(alice, UPLOAD, "mine.raw", len(data))
    assert len(tk.ticket) == 64 and tk.expires_in_seconds == image_transfer.TICKET_SECONDS
    upload(tk.port, tk.ticket, data)
    assert (images / "mine.raw").read_bytes() == data
    assert {i.name: i.owner for i in alice.list_images()}["mine.raw"] == "alice"
    # Used once, forged, or too short: refused alike, and nothing more is written.
    for text in (tk.ticket, "0" * 64, "f" * 63):
        with raw(tk.port, text.encode()) as sock:
            if len(text) < 64:
                sock.shutdown(socket.SHUT_WR)
                assert sock.recv(1) == b"", "a short ticket ends the connection"
                continue
            with pytest.raises(TashiError) as err:
                wire._raise_for(wire.read_frame(sock))
            assert err.value.code == C.UNAUTHENTICATED
    # Bob may not download alice's image, so he gets no ticket for it.
    refused(lambda: ticket(bob, DOWNLOAD, "mine.raw"), C.PERMISSION_DENIED)
    size, digest = alice.download_image("mine.raw", tmp_path / "back.raw")
    assert size == len(data) and digest == "blake3:" + blake3.blake3(data).hexdigest()
    # A caller holds a bounded number of unused tickets.
    for i in range(image_transfer.TICKETS_PER_CALLER):
        ticket(bob, UPLOAD, f"t{i}.raw", 1)
    refused(lambda: ticket(bob, UPLOAD, "one-more.raw", 1), C.RESOURCE_EXHAUSTED, "unused")


def test_an_expired_ticket_is_refused(cmx: InProcCM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_transfer, "TICKET_SECONDS", 0)
    tk = ticket(cmx.client("alice"), UPLOAD, "late.raw", 10)
    with raw(tk.port, tk.ticket.encode()) as sock:
        with pytest.raises(TashiError) as err:
            wire._raise_for(wire.read_frame(sock))
    assert err.value.code == C.UNAUTHENTICATED and "expired" in err.value.message


def test_damaged_short_and_refused_uploads_leave_nothing(cmx: InProcCM) -> None:
    alice = cmx.client("alice")
    images = Path(cmx.cfg.images)
    data = os.urandom(2 * MIB)
    tk = ticket(alice, UPLOAD, "d.raw", len(data))
    with pytest.raises(TashiError) as err:
        upload(tk.port, tk.ticket, data, digest=b"\0" * 32)
    assert err.value.code == C.INVALID_ARGUMENT and "BLAKE3" in err.value.message
    # Most of the bytes (the CM writes in blocks of bulk.BLOCK), then the client goes away.
    tk = ticket(alice, UPLOAD, "d.raw", 6 * MIB)
    with raw(tk.port, tk.ticket.encode()) as sock:
        wire._raise_for(wire.read_frame(sock))
        sock.sendall(os.urandom(5 * MIB))
        wait_for(lambda: any((images / h).stat().st_size >= bulk.BLOCK for h in hidden(images)),
                 what="a block of the upload on disk")
        assert not (images / "d.raw").exists()
    wait_for(lambda: not hidden(images), what="the half upload removed")
    # The quota is checked again when the ticket is used: bob's tickets reserve nothing.
    tk = ticket(alice, UPLOAD, "big.raw", 6 * MIB)
    alice.upload_image(random_file(Path(cmx.cfg.images).parent / "s.raw", 4 * MIB), "s.raw",
                       data_port=False)
    with pytest.raises(TashiError) as err:
        upload(tk.port, tk.ticket, os.urandom(6 * MIB))
    assert err.value.code == C.RESOURCE_EXHAUSTED and "quota" in err.value.message
    assert not hidden(images)
    assert sorted(p.name for p in images.iterdir() if p.name.endswith(".raw")) == ["s.raw"]
    # Every slot was given back: four uploads at once (the per-caller bound) still work.
    done = [alice.upload_image(random_file(images.parent / f"ok{i}.raw", 1000), f"ok{i}.raw")
            for i in range(4)]
    assert [i.name for i in done] == [f"ok{i}.raw" for i in range(4)]


def test_silent_connections_are_bounded_and_cut(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_side, "HELLO_SECONDS", 1.0)
    monkeypatch.setattr(server_side, "HELLOS", 3)
    with inproc_cm(tmp_path) as cm:
        port = ticket(cm.client(), UPLOAD, "x.raw", 1).port
        silent = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert closed_on(extra), "past the bound a connection is closed at once"
        t0 = time.monotonic()
        assert closed_on(silent[0]), "a silent connection is cut"
        assert time.monotonic() - t0 < 5
        for s in silent:
            s.close()
        # The bound freed up again: a real upload goes through.
        img = cm.client().upload_image(random_file(tmp_path / "f.raw", 1000), "f.raw")
        assert img.size_bytes == 1000


def test_a_hostile_data_port_is_refused_by_the_client(tmp_path: Path) -> None:
    """A frame claiming 4 GiB and a download whose digest does not match: the client
    keeps nothing and does not allocate what the server claims."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    replies = [struct.pack(">I", 0xFFFFFFF0),
               wire.frame(cmpb.ImageTransferResult(image={"size_bytes": 4}))
               + b"evil" + blake3.blake3(b"good").digest()]

    def serve() -> None:
        for reply in replies:
            conn, _ = listener.accept()
            with conn:
                wire.read_exact(conn, 64)
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        refused(lambda: wire.download("127.0.0.1", port, "a" * 64, tmp_path / "x"),
                C.UNAVAILABLE, "past the")
        refused(lambda: wire.download("127.0.0.1", port, "a" * 64, tmp_path / "x"),
                C.DATA_LOSS, "damaged")
    finally:
        thread.join(10)
        listener.close()
    assert list(tmp_path.iterdir()) == []


def test_over_tls_and_without_a_data_port(tmp_path: Path) -> None:
    site, other = tmp_path / "site", tmp_path / "other"
    create_ca(site)
    create_ca(other, site="elsewhere")
    cert, key = issue(site, "service", "tashi-cm")
    data = random_file(tmp_path / "f.raw", 3 * MIB + 7)
    with inproc_cm(tmp_path / "tls", tls_ca=str(site / "ca.pem"), tls_cert=str(cert),
                   tls_key=str(key)) as cm:
        user = Tls.load(site / "ca.pem", *issue(site, "user", "root"))
        client = ClusterClient(cm.address, tls=user, timeout=10)
        assert client.upload_image(data, "t.raw").size_bytes == 3 * MIB + 7
        size, digest = client.download_image("t.raw", tmp_path / "t.back")
        assert (tmp_path / "t.back").read_bytes() == data.read_bytes()
        tk = ticket(client, DOWNLOAD, "t.raw")
        assert closed_on(raw(tk.port, b"x" * 64)), "plaintext to a TLS port: no answer"
        # A client that trusts another CA does not send its bytes to this server.
        stranger = Tls(ca=(other / "ca.pem").read_bytes(), cert=b"", key=b"")
        refused(lambda: wire.upload("127.0.0.1", tk.port, tk.ticket, data, stranger),
                C.UNAVAILABLE, "CERTIFICATE_VERIFY_FAILED")
        client.close()
    with inproc_cm(tmp_path / "off", data_listen="off") as cm:
        client = cm.client()
        refused(lambda: ticket(client, UPLOAD, "x.raw", 1), C.FAILED_PRECONDITION,
                "no data port")
        assert client.upload_image(data, "x.raw").size_bytes == 3 * MIB + 7, "the stream"
        assert client.download_image("x.raw", tmp_path / "x.back")[1].startswith("sha256:")
