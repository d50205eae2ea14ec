"""The image commands of `tashi` against a real cluster manager process: an
upload and download round trip, copies followed to the end, clones, flattens,
deletes, their errors as one line, and the progress bar on a terminal."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
from pathlib import Path

import blake3

from tashi.cli.image_cmds import ProgressBar
from tests.harness import CMProcess, bin_path

MIB = 1 << 20


def tashi(cm: CMProcess, *args: str, user: str = "root",
          stderr: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TASHI_CM": cm.address, "TASHI_USER": user}
    return subprocess.run([bin_path("tashi"), *args], stdout=subprocess.PIPE,
                          stderr=stderr if stderr is not None else subprocess.PIPE, text=True,
                          env=env, timeout=60)


def ok(cm: CMProcess, *args: str, user: str = "root") -> str:
    res = tashi(cm, *args, user=user)
    assert res.returncode == 0, res.stderr
    return res.stdout


def images_of(cm: CMProcess, user: str = "root") -> dict[str, dict[str, object]]:
    return {i["name"]: i for i in json.loads(ok(cm, "getImages", "-o", "json", user=user))}


def test_upload_download_round_trip_and_the_other_image_commands(cm: CMProcess,
                                                                 tmp_path: Path) -> None:
    ok(cm, "addUser", "--name", "alice")
    ok(cm, "addUser", "--name", "bob")
    local = tmp_path / "disk.raw"
    local.write_bytes(os.urandom(3 * MIB + 7))
    out = ok(cm, "uploadImage", str(local), "--name", "mine.raw", user="alice")
    assert "mine.raw" in out and "alice" in out and "ready" in out
    shown = images_of(cm, "alice")["mine.raw"]
    assert shown["owner"] == "alice" and shown["format"] == "raw" and shown["state"] == "ready"
    back = tmp_path / "back"
    back.mkdir()
    got = json.loads(ok(cm, "downloadImage", "mine.raw", str(back), "-o", "json", user="alice"))
    assert got[0]["digest"] == "blake3:" + blake3.blake3(local.read_bytes()).hexdigest()
    assert (back / "mine.raw").read_bytes() == local.read_bytes()
    assert sorted(p.name for p in back.iterdir()) == ["mine.raw"]
    # Others may not read it whole; nothing is written for them.
    res = tashi(cm, "downloadImage", "mine.raw", str(tmp_path / "theirs"), user="bob")
    assert res.returncode == 1 and "PERMISSION_DENIED" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "theirs").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    table = ok(cm, "copyImage", "--src", "mine.raw", "--dst", "copy.raw", "--wait", user="alice")
    assert table.splitlines()[0].split()[-1] == "state" and "ready" in table
    assert images_of(cm)["copy.raw"]["state"] == "ready"
    clone = ok(cm, "cloneImage", "--src", "base.qcow2", "--dst", "over.qcow2", "-o", "json",
               user="alice")
    assert json.loads(clone)[0]["backing"] == "base.qcow2"
    ok(cm, "rebaseImage", "--image", "over.qcow2", "--wait", user="alice")
    assert images_of(cm)["over.qcow2"]["backing"] == ""
    for name in ("copy.raw", "over.qcow2", "mine.raw"):
        ok(cm, "deleteImage", "--image", name, user="alice")
    assert set(images_of(cm)) == {"base.qcow2", "sub/data.img"}

    cases = [
        (("deleteImage", "--image", "base.qcow2"), "PERMISSION_DENIED"),
        (("copyImage", "--src", "base.qcow2", "--dst", "../x.raw"), "INVALID_ARGUMENT"),
        (("uploadImage", str(tmp_path / "nothing.raw")), "no such file"),
        (("uploadImage", str(local), "--name", "base.qcow2"), "ALREADY_EXISTS"),
        (("downloadImage", "nothing.raw", str(tmp_path)), "NOT_FOUND"),
    ]
    for args, words in cases:
        res = tashi(cm, *args, user="alice")
        assert res.returncode != 0, args
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, res.stderr)


def test_a_progress_bar_on_a_terminal_only(cm: CMProcess, tmp_path: Path) -> None:
    local = tmp_path / "disk.raw"
    local.write_bytes(os.urandom(4 * MIB))
    # stderr a pipe: no bar.
    res = tashi(cm, "uploadImage", str(local), "--name", "quiet.raw")
    assert res.returncode == 0 and res.stderr == ""
    # stderr a terminal: the bar, ending at all of it.
    leader, follower = pty.openpty()
    try:
        res = tashi(cm, "uploadImage", str(local), "--name", "loud.raw", stderr=follower)
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's far end is closed
                break
            if not data:
                break
            shown += data
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert res.returncode == 0
    text = shown.decode()
    assert "uploading disk.raw: 4.0 / 4.0 MiB  100%" in text and "MiB/s" in text


def test_the_progress_bar_draws_bytes_total_percent_and_rate() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    bar = ProgressBar("uploading x", term)
    bar(MIB, 4 * MIB)
    bar(4 * MIB, 4 * MIB)
    bar.done()
    lines = term.getvalue().split("\r")
    assert lines[-1].startswith("uploading x: 4.0 / 4.0 MiB  100%") and lines[-1].endswith("\n")
    assert "MiB/s" in lines[-1]
    quiet = io.StringIO()
    ProgressBar("x", quiet)(1, 2)
    assert quiet.getvalue() == ""
