"""Images made, changed and moved through the cluster manager (issue 14): copies
in the background, clones, rebases, deletes, uploads and downloads, each with
its refusals (hostile names, a format attack, images in use, other users'
images, quotas), on real files made with qemu-img.  Nothing partial is ever
visible under an image's name, and nothing is left of a refused or abandoned
upload."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import blake3
import grpc
import pytest

from tashi.runtime.client import ClusterClient, TashiError
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import cluster_manager_pb2_grpc as cm_grpc
from tashi.v1 import resources_pb2 as pb
from tests.harness import CMProcess, InProcCM, image_store, inproc_cm, vm, wait_for

C = grpc.StatusCode
MIB = 1 << 20
READY, COPYING, FAILED = pb.IMAGE_STATE_READY, pb.IMAGE_STATE_COPYING, pb.IMAGE_STATE_FAILED


def qemu_img(*args: str | Path) -> str:
    return subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True,
                          text=True).stdout


def qemu_io(image: Path, fmt: str, command: str) -> None:
    subprocess.run(["qemu-io", "-f", fmt, "-c", command, str(image)], check=True,
                   capture_output=True)


def same_content(a: Path, b: Path) -> bool:
    """What a guest sees of the two images is the same (their chains included)."""
    return subprocess.run(["qemu-img", "compare", "-U", str(a), str(b)],
                          capture_output=True).returncode == 0


def refused(call: Callable[[], object], code: grpc.StatusCode, text: str = "") -> str:
    with pytest.raises(TashiError) as err:
        call()
    assert err.value.code == code, err.value
    assert text in err.value.message, err.value.message
    return err.value.message


def random_file(path: Path, size: int) -> Path:
    block = os.urandom(MIB)
    with open(path, "wb") as f:
        for i in range(0, size, MIB):
            f.write(block[: min(MIB, size - i)])
    return path


def hidden(images: Path) -> list[str]:
    """Hidden (temporary) files anywhere in the store."""
    return sorted(f for _d, _s, files in os.walk(images) for f in files if f.startswith("."))


def listed(client: ClusterClient) -> dict[str, pb.Image]:
    return {i.name: i for i in client.list_images()}


def ready(client: ClusterClient, name: str, timeout: float = 30.0) -> pb.Image:
    return wait_for(lambda: (i := listed(client).get(name)) is not None and i.state != COPYING
                    and i, timeout=timeout, what=f"{name} written")


@pytest.fixture
def cmx(tmp_path: Path) -> Iterator[InProcCM]:
    with inproc_cm(tmp_path) as cm:
        cm.client().create_user("alice")
        cm.client().create_user("bob")
        yield cm


def store(cm: InProcCM) -> Path:
    return Path(cm.cfg.images)


def test_a_copy_runs_in_the_background_and_appears_only_when_done(tmp_path: Path) -> None:
    with inproc_cm(tmp_path, image_copy_rate=4 * MIB) as cm:
        cm.client().create_user("alice")
        images = store(cm)
        random_file(images / "src.raw", 12 * MIB)
        root, alice = cm.client(), cm.client("alice")
        root.add_image("src.raw", owner="alice")
        made = alice.copy_image("src.raw", "copy.raw")
        assert made.state == COPYING and made.owner == "alice" and made.format == "raw"
        seen: list[pb.Image] = []

        def progressed() -> bool:
            img = listed(alice)["copy.raw"]
            seen.append(img)
            return img.state == COPYING and img.progress_percent > 0

        wait_for(progressed, timeout=10, what="progress shown")
        # Under way: the catalogue shows it, nothing is under its name, nothing can use it.
        assert not (images / "copy.raw").exists() and hidden(images)
        refused(lambda: alice.create_instances(vm("early", disks=[pb.Disk(uri="copy.raw")])),
                C.NOT_FOUND)
        refused(lambda: alice.copy_image("src.raw", "copy.raw"), C.ALREADY_EXISTS)
        done = ready(alice, "copy.raw")
        assert done.state == READY and not done.reason and done.size_bytes == 12 * MIB
        assert (images / "copy.raw").read_bytes() == (images / "src.raw").read_bytes()
        assert not hidden(images), "the temporary file is gone"
        assert all(s.state in (COPYING, READY) for s in seen)
        made_vm = alice.create_instances(vm("db", disks=[pb.Disk(uri="copy.raw",
                                                                  persistent=True)]))[0]
        assert made_vm.spec.disks[0].format == "raw"


def test_a_copy_of_a_chain_is_whole_and_a_clone_is_an_overlay(cmx: InProcCM) -> None:
    images = store(cmx)
    alice = cmx.client("alice")
    qemu_io(images / "base.qcow2", "qcow2", "write -P 0x11 0 1M")
    clone = alice.clone_image("base.qcow2", "mine.qcow2")
    assert (clone.format, clone.backing, clone.owner) == ("qcow2", "base.qcow2", "alice")
    info = qemu_img("info", "-U", images / "mine.qcow2")
    assert "backing file: base.qcow2" in info and "backing file format: qcow2" in info
    qemu_io(images / "mine.qcow2", "qcow2", "write -P 0x22 1M 1M")
    alice.copy_image("mine.qcow2", "whole.qcow2")
    whole = ready(alice, "whole.qcow2")
    assert whole.state == READY and whole.backing == "" and whole.owner == "alice"
    assert same_content(images / "whole.qcow2", images / "mine.qcow2")
    # A clone of a raw image names its backing raw: nothing is ever probed.
    raw = alice.clone_image("sub/data.img", "sub/over.qcow2")
    assert raw.backing == "sub/data.img"
    assert "backing file format: raw" in qemu_img("info", "-U", images / "sub/over.qcow2")
    assert listed(alice)["base.qcow2"].in_use == 1


@pytest.mark.parametrize("name, code", [
    ("../outside.raw", C.INVALID_ARGUMENT), ("/etc/evil.raw", C.INVALID_ARGUMENT),
    ("sub/../../outside.raw", C.INVALID_ARGUMENT), ("a\x00b.raw", C.INVALID_ARGUMENT),
    (".hidden.raw", C.INVALID_ARGUMENT), ("sub/.hidden.raw", C.INVALID_ARGUMENT),
    ("x" * 256, C.INVALID_ARGUMENT), ("new\nline.raw", C.INVALID_ARGUMENT),
    ("", C.INVALID_ARGUMENT), (".", C.INVALID_ARGUMENT),
    ("out/escaped.raw", C.INVALID_ARGUMENT), ("nofolder/x.raw", C.NOT_FOUND),
    ("base.qcow2", C.ALREADY_EXISTS), ("./sub//data.img", C.ALREADY_EXISTS),
    ("dangling.raw", C.ALREADY_EXISTS),
])
def test_hostile_names_are_refused_and_change_nothing(cmx: InProcCM, tmp_path: Path,
                                                      name: str, code: grpc.StatusCode) -> None:
    images = store(cmx)
    outside = tmp_path / "outside"
    outside.mkdir()
    (images / "out").symlink_to(outside)
    (images / "dangling.raw").symlink_to(tmp_path / "nowhere")
    before = sorted(os.listdir(images))
    alice = cmx.client("alice")
    upload = random_file(tmp_path / "up.raw", 4096)
    for call in (lambda: alice.copy_image("sub/data.img", name),
                 lambda: alice.clone_image("base.qcow2", name),
                 lambda: alice.upload_image(upload, name or ".")):
        refused(call, code)
    assert sorted(os.listdir(images)) == before and not hidden(images)
    assert not list(outside.iterdir()) and not (tmp_path / "nowhere").exists()
    assert {i.name for i in cmx.cluster.image_records.values()} <= {"sub/data.img",
                                                                   "base.qcow2"}


def test_hostile_sources_are_refused(cmx: InProcCM, tmp_path: Path) -> None:
    images = store(cmx)
    (images / "passwd.raw").symlink_to("/etc/passwd")
    alice = cmx.client("alice")
    for src in ("../../etc/passwd", "/etc/passwd", "passwd.raw", "sub/../../cm.db"):
        refused(lambda src=src: alice.copy_image(src, "stolen.raw"), C.INVALID_ARGUMENT)
        refused(lambda src=src: alice.download_image(src, tmp_path / "stolen"),
                C.INVALID_ARGUMENT)
    qemu_img("create", "-q", "-f", "qcow2", images / "t.qcow2", "1M")
    os.rename(images / "t.qcow2", images / ".secret.qcow2")
    refused(lambda: alice.clone_image(".secret.qcow2", "x.qcow2"), C.INVALID_ARGUMENT, "hidden")
    refused(lambda: alice.download_image(".secret.qcow2", tmp_path / "s"), C.INVALID_ARGUMENT)
    assert not (images / "stolen.raw").exists() and not (tmp_path / "stolen").exists()


def test_the_format_attack_is_refused_at_upload(cmx: InProcCM, tmp_path: Path) -> None:
    """A 'raw' file that is in truth a qcow2 header naming /etc/shadow as its backing
    file: qemu-img would chain the host's file in. Refused, nothing left."""
    images = store(cmx)
    evil = tmp_path / "disk.raw"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw", evil)
    alice, bob = cmx.client("alice"), cmx.client("bob")
    refused(lambda: alice.upload_image(evil, "disk.raw"), C.INVALID_ARGUMENT,
            "backed by a file outside the image store")
    # The same through the store: backed by bob's image (not hers) ...
    cmx.client().add_image("sub/data.img", owner="bob")
    theirs = tmp_path / "theirs.qcow2"
    qemu_img("create", "-q", "-u", "-f", "qcow2", "-b", "sub/data.img", "-F", "raw", theirs, "1M")
    refused(lambda: alice.upload_image(theirs, "theirs.qcow2"), C.PERMISSION_DENIED, "'bob'")
    bob.upload_image(theirs, "theirs.qcow2")  # ... which bob may
    # ... or naming a qcow2 image's format as raw (or a raw one's as qcow2).
    liar = tmp_path / "liar.qcow2"
    qemu_img("create", "-q", "-u", "-f", "qcow2", "-b", "base.qcow2", "-F", "raw", liar, "1M")
    refused(lambda: alice.upload_image(liar, "liar.qcow2"), C.INVALID_ARGUMENT, "is qcow2")
    vmdk = tmp_path / "disk.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", vmdk, "1M")
    refused(lambda: alice.upload_image(vmdk, "disk.vmdk"), C.INVALID_ARGUMENT, "only raw")
    assert not hidden(images)
    assert {"disk.raw", "liar.qcow2", "disk.vmdk"}.isdisjoint(os.listdir(images))
    assert set(listed(alice)) == {"base.qcow2", "sub/data.img", "theirs.qcow2"}


@pytest.mark.parametrize("data_port", [True, False], ids=["data port", "grpc stream"])
def test_upload_and_download_round_trip(cmx: InProcCM, tmp_path: Path, data_port: bool) -> None:
    images = store(cmx)
    alice = cmx.client("alice")
    src = random_file(tmp_path / "big.raw", 5 * MIB + 123)
    progress: list[tuple[int, int]] = []
    img = alice.upload_image(src, "sub/big.raw", progress=lambda d, t: progress.append((d, t)),
                             data_port=data_port)
    assert (img.name, img.owner, img.format, img.state) == ("sub/big.raw", "alice", "raw", READY)
    assert img.size_bytes == 5 * MIB + 123 and img.virtual_size_bytes == 5 * MIB + 512
    # Progress after each block: 4 MiB through the data port, 1 MiB messages on the stream.
    assert progress[-1] == (5 * MIB + 123, 5 * MIB + 123)
    assert len(progress) == (2 if data_port else 6)
    assert (images / "sub/big.raw").read_bytes() == src.read_bytes()
    assert oct((images / "sub/big.raw").stat().st_mode & 0o777) == "0o644"
    out = tmp_path / "back.raw"
    size, digest = alice.download_image("sub/big.raw", out, data_port=data_port)
    assert size == 5 * MIB + 123 and out.read_bytes() == src.read_bytes()
    if data_port:
        assert digest == "blake3:" + blake3.blake3(src.read_bytes()).hexdigest()
    else:
        assert digest == "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    digest = alice.download_image("sub/big.raw", out, data_port=False)[1].split(":")[1]
    # The stream itself: the size first, chunks of at most 1 MiB, the sha256 last.
    stub = cm_grpc.ClusterManagerServiceStub(alice._channel)
    parts = list(stub.DownloadImage(cmpb.DownloadImageRequest(name="sub/big.raw"),
                                    metadata=(("x-tashi-user", "alice"),), timeout=10))
    assert parts[0].WhichOneof("part") == "size_bytes" and parts[0].size_bytes == size
    assert parts[-1].WhichOneof("part") == "sha256" and parts[-1].sha256 == digest
    assert all(len(p.chunk) <= MIB for p in parts[1:-1]) and len(parts) == 8
    # A qcow2 upload keeps its format; a copy of an upload is a copy.
    q = tmp_path / "q.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", q, "8M")
    assert alice.upload_image(q).format == "qcow2"


def test_a_damaged_upload_leaves_nothing(cmx: InProcCM, tmp_path: Path) -> None:
    images = store(cmx)
    alice = cmx.client("alice")
    stub = cm_grpc.ClusterManagerServiceStub(alice._channel)
    md = (("x-tashi-user", "alice"),)
    data = os.urandom(3 * MIB)
    good = hashlib.sha256(data).hexdigest()

    def send(*parts: cmpb.UploadImageRequest) -> None:
        try:
            stub.UploadImage(iter(parts), metadata=md, timeout=10)
        except grpc.RpcError as exc:
            raise TashiError(exc.code(), exc.details() or "") from None

    def head(size: int = len(data), sha: str = good, name: str = "d.raw"
             ) -> cmpb.UploadImageRequest:
        return cmpb.UploadImageRequest(header=cmpb.UploadImageHeader(
            name=name, size_bytes=size, sha256=sha))

    def chunks(blob: bytes) -> list[cmpb.UploadImageRequest]:
        return [cmpb.UploadImageRequest(chunk=blob[i:i + MIB]) for i in range(0, len(blob), MIB)]

    refused(lambda: send(head(sha="0" * 64), *chunks(data)), C.INVALID_ARGUMENT, "sha256")
    refused(lambda: send(head(), *chunks(data[:-1])), C.INVALID_ARGUMENT, "bytes")
    refused(lambda: send(head(size=MIB), *chunks(data)), C.INVALID_ARGUMENT, "more than")
    refused(lambda: send(*chunks(data)), C.INVALID_ARGUMENT, "header")
    refused(lambda: send(head(), head()), C.INVALID_ARGUMENT, "chunks only")
    refused(lambda: send(head(sha="xyz")), C.INVALID_ARGUMENT, "64 hex")
    refused(lambda: send(head(size=0)), C.INVALID_ARGUMENT, "size_bytes")
    refused(lambda: send(head(size=-5)), C.INVALID_ARGUMENT, "size_bytes")
    assert not hidden(images) and "d.raw" not in os.listdir(images)
    send(head(), *chunks(data))
    assert (images / "d.raw").read_bytes() == data
    # Bytes that are no UploadImageRequest at all: the caller's mistake, not the server's.
    raw = alice._channel.stream_unary("/tashi.v1.ClusterManagerService/UploadImage",
                                      request_serializer=lambda b: b,
                                      response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as err:
        raw(iter([b"\xff\xff\xff"]), metadata=md, timeout=10)
    assert err.value.code() == C.INVALID_ARGUMENT


UPLOADER = """
import sys, time
from tashi.runtime.client import ClusterClient
from tashi.v1 import cluster_manager_pb2 as cm
client = ClusterClient(sys.argv[1], user="alice")
def parts():
    yield cm.UploadImageRequest(header=cm.UploadImageHeader(
        name="half.raw", size_bytes=8 << 20, sha256="0" * 64))
    for _ in range(4):
        yield cm.UploadImageRequest(chunk=b"x" * (1 << 20))
    print("half sent", flush=True)
    time.sleep(3600)
client.cm.UploadImage(parts(), metadata=client._metadata)
"""


def test_an_upload_killed_half_way_leaves_nothing(cmx: InProcCM, tmp_path: Path) -> None:
    images = store(cmx)
    proc = subprocess.Popen([sys.executable, "-c", UPLOADER, cmx.address],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "half sent"
        temp = wait_for(lambda: [images / n for n in hidden(images)
                                 if (images / n).stat().st_size >= 4 * MIB],
                        what="half the upload on disk")
        assert not (images / "half.raw").exists()
        assert "half.raw" not in listed(cmx.client("alice"))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    wait_for(lambda: not hidden(images), what="the temporary file removed")
    assert not temp[0].exists() and not (images / "half.raw").exists()
    assert "half.raw" not in listed(cmx.client("alice"))
    assert not any(i.name == "half.raw" for i in cmx.cluster.image_records.values())
    # The name is free again, and so is the caller's transfer slot.
    alice = cmx.client("alice")
    for _ in range(5):
        assert alice.upload_image(random_file(tmp_path / "ok.raw", 1000), "half.raw").name
        alice.delete_image("half.raw")


def test_a_download_is_checked_by_the_client(tmp_path: Path) -> None:
    """The client keeps nothing of a download whose bytes do not match its sha256."""

    class Liar(cm_grpc.ClusterManagerServiceServicer):
        def DownloadImage(self, req: object, ctx: object) -> Iterator[object]:
            yield cmpb.DownloadImageResponse(size_bytes=4)
            yield cmpb.DownloadImageResponse(chunk=b"evil")
            yield cmpb.DownloadImageResponse(sha256=hashlib.sha256(b"good").hexdigest())

    server = grpc.server(futures.ThreadPoolExecutor(2))
    cm_grpc.add_ClusterManagerServiceServicer_to_server(Liar(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with ClusterClient(f"127.0.0.1:{port}") as client:
            refused(lambda: client.download_image("x.raw", tmp_path / "x.raw"), C.DATA_LOSS,
                    "damaged")
    finally:
        server.stop(0)
    assert list(tmp_path.iterdir()) == []


def test_only_ones_own_or_site_images_are_sources(cmx: InProcCM, tmp_path: Path) -> None:
    root, alice, bob = cmx.client(), cmx.client("alice"), cmx.client("bob")
    root.add_image("sub/data.img", owner="alice")
    for call in (lambda: bob.copy_image("sub/data.img", "b1.raw"),
                 lambda: bob.clone_image("sub/data.img", "b2.qcow2"),
                 lambda: bob.download_image("sub/data.img", tmp_path / "b3")):
        refused(call, C.PERMISSION_DENIED, "'alice''s")
    alice.clone_image("sub/data.img", "a.qcow2")
    root.copy_image("sub/data.img", "r.raw")  # admins: any image
    assert ready(root, "r.raw").owner == "root"
    bob.clone_image("base.qcow2", "b.qcow2")  # a site image: anyone
    bob.download_image("base.qcow2", tmp_path / "base.qcow2")
    # Changing and deleting: one's own (site images: admins).
    refused(lambda: bob.delete_image("a.qcow2"), C.PERMISSION_DENIED, "'alice''s")
    refused(lambda: bob.rebase_image("a.qcow2"), C.PERMISSION_DENIED, "'alice''s")
    refused(lambda: alice.delete_image("r.raw"), C.PERMISSION_DENIED)
    refused(lambda: alice.delete_image("base.qcow2"), C.PERMISSION_DENIED, "site image")
    refused(lambda: root.delete_image("base.qcow2"), C.FAILED_PRECONDITION, "backs")
    (store(cmx) / "junk.raw").write_bytes(b"junk")
    refused(lambda: alice.delete_image("junk.raw"), C.PERMISSION_DENIED, "admins")
    root.delete_image("junk.raw")
    refused(lambda: cmx.client("mallory").copy_image("base.qcow2", "m.raw"),
            C.UNAUTHENTICATED)
    assert not (store(cmx) / "junk.raw").exists()


def test_images_in_use_are_neither_deleted_nor_rebased(cmx: InProcCM) -> None:
    images = store(cmx)
    alice = cmx.client("alice")
    alice.clone_image("base.qcow2", "mine.qcow2")
    inst = alice.create_instances(vm("db", disks=[pb.Disk(uri="mine.qcow2", persistent=True)]))[0]
    refused(lambda: alice.delete_image("mine.qcow2"), C.FAILED_PRECONDITION, "instance 'db'")
    refused(lambda: alice.rebase_image("mine.qcow2"), C.FAILED_PRECONDITION, "instance 'db'")
    refused(lambda: cmx.client().delete_image("./mine.qcow2"), C.FAILED_PRECONDITION, "'db'")
    # Written in place: not read whole either (it would be caught half-written).
    for call in (lambda: alice.clone_image("mine.qcow2", "child.qcow2"),
                 lambda: alice.copy_image("mine.qcow2", "copy.qcow2"),
                 lambda: alice.download_image("mine.qcow2", images.parent / "dl")):
        refused(call, C.FAILED_PRECONDITION, "persistent disk of instance 'db'")
    alice.instance_action("Delete", inst.id)
    wait_for(lambda: not alice.list_instances(), what="the instance gone")
    alice.clone_image("mine.qcow2", "child.qcow2")
    refused(lambda: alice.delete_image("mine.qcow2"), C.FAILED_PRECONDITION, "backs")
    refused(lambda: alice.rebase_image("mine.qcow2"), C.FAILED_PRECONDITION, "backs")
    gone = alice.delete_image("child.qcow2")
    assert gone.name == "child.qcow2" and not (images / "child.qcow2").exists()
    alice.delete_image("mine.qcow2")
    assert not (images / "mine.qcow2").exists() and not hidden(images)
    assert set(listed(alice)) == {"base.qcow2", "sub/data.img"}
    refused(lambda: alice.delete_image("mine.qcow2"), C.NOT_FOUND)


def test_rebase_keeps_the_content_and_flatten_runs_in_the_background(cmx: InProcCM) -> None:
    images = store(cmx)
    alice = cmx.client("alice")
    qemu_io(images / "base.qcow2", "qcow2", "write -P 0x33 0 2M")
    alice.copy_image("base.qcow2", "base2.qcow2")  # the same content, hers
    ready(alice, "base2.qcow2")
    alice.clone_image("base.qcow2", "vm.qcow2")
    qemu_io(images / "vm.qcow2", "qcow2", "write -P 0x44 1M 2M")
    reference = images.parent / "reference.qcow2"
    qemu_img("convert", "-f", "qcow2", "-O", "qcow2", images / "vm.qcow2", reference)
    moved = alice.rebase_image("vm.qcow2", "base2.qcow2")
    assert moved.state == READY and moved.backing == "base2.qcow2" and not moved.reason
    assert same_content(images / "vm.qcow2", reference)
    assert "backing file: base2.qcow2" in qemu_img("info", "-U", images / "vm.qcow2")
    assert listed(alice)["base.qcow2"].in_use == 0
    refused(lambda: alice.rebase_image("base2.qcow2", "vm.qcow2"), C.FAILED_PRECONDITION,
            "backs image 'vm.qcow2'")
    refused(lambda: alice.rebase_image("vm.qcow2", "vm.qcow2"), C.INVALID_ARGUMENT,
            "cannot back itself")
    refused(lambda: alice.rebase_image("sub/data.img"), C.PERMISSION_DENIED)
    flat = alice.rebase_image("vm.qcow2")
    assert flat.state == COPYING
    done = ready(alice, "vm.qcow2")
    assert done.state == READY and done.backing == "" and not done.reason
    assert same_content(images / "vm.qcow2", reference) and not hidden(images)
    assert listed(alice)["base2.qcow2"].in_use == 0
    assert alice.rebase_image("vm.qcow2").backing == ""  # nothing left to flatten


def test_a_delete_stops_a_copy_under_way(tmp_path: Path) -> None:
    with inproc_cm(tmp_path, image_copy_rate=2 * MIB) as cm:
        cm.client().create_user("alice")
        images = store(cm)
        random_file(images / "src.raw", 16 * MIB)
        alice = cm.client("alice")
        alice.copy_image("src.raw", "slow.raw")
        wait_for(lambda: hidden(images), what="the copy started")
        gone = alice.delete_image("slow.raw")
        assert gone.state == COPYING
        wait_for(lambda: not hidden(images), what="the temporary file removed")
        time.sleep(0.3)
        assert "slow.raw" not in listed(alice) and not (images / "slow.raw").exists()
        # The name is free again.
        alice.copy_image("sub/data.img", "slow.raw")
        assert ready(alice, "slow.raw").state == READY


def test_quota(tmp_path: Path) -> None:
    with inproc_cm(tmp_path, quota_image_bytes=4 * MIB) as cm:
        cm.client().create_user("alice")
        images = store(cm)
        alice, root = cm.client("alice"), cm.client()
        alice.upload_image(random_file(tmp_path / "a.raw", 3 * MIB), "a.raw")
        refused(lambda: alice.upload_image(random_file(tmp_path / "b.raw", 2 * MIB), "b.raw"),
                C.RESOURCE_EXHAUSTED, "quota")
        refused(lambda: alice.copy_image("a.raw", "a2.raw"), C.RESOURCE_EXHAUSTED, "quota")
        assert not hidden(images) and not (images / "b.raw").exists()
        alice.clone_image("a.raw", "small.qcow2")  # an overlay is small
        root.copy_image("a.raw", "root.raw")  # admins are exempt
        ready(root, "root.raw")
        root.upload_image(tmp_path / "b.raw", "b.raw")
        alice.delete_image("small.qcow2")
        alice.upload_image(random_file(tmp_path / "c.raw", MIB // 2), "c.raw")
        assert {n for n, i in listed(alice).items() if i.owner == "alice"} == {"a.raw", "c.raw"}


def test_a_restarted_cm_fails_an_unfinished_copy_and_cleans_up(tmp_path: Path) -> None:
    images = image_store(tmp_path / "images")
    random_file(images / "src.raw", 16 * MIB)
    cm = CMProcess(tmp_path, images=str(images), image_copy_rate=MIB)
    try:
        cm.client().add_image("src.raw")
        cm.client().copy_image("src.raw", "cut.raw")
        wait_for(lambda: hidden(images), what="the copy started")
        cm.kill()
        cm = CMProcess(tmp_path, images=str(images))
        img = wait_for(lambda: listed(cm.client()).get("cut.raw"))
        assert img.state == FAILED and "stopped while writing it" in img.reason
        assert not hidden(images) and not (images / "cut.raw").exists()
        refused(lambda: cm.client().create_instances(vm("x", disks=[pb.Disk(uri="cut.raw")])),
                C.NOT_FOUND)
        cm.client().delete_image("cut.raw")
        assert "cut.raw" not in listed(cm.client())
    finally:
        cm.stop()
