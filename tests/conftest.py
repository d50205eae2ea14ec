"""Fixtures for every test folder: `cm` (a CM process), `icm` (an in-process CM), `images`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import CMProcess, InProcCM, image_store, start_cm


@pytest.fixture
def cm(tmp_path: Path) -> Iterator[CMProcess]:
    """A real cluster manager process on loopback with a fresh store."""
    proc = start_cm(tmp_path, images=str(_images(tmp_path)))
    try:
        yield proc
    finally:
        proc.stop()


def _images(tmp_path: Path) -> Path:
    return image_store(tmp_path / "images")


@pytest.fixture
def icm(tmp_path: Path) -> Iterator[InProcCM]:
    """An in-process cluster manager (real gRPC on loopback), fresh store, alice a user."""
    cm = InProcCM(tmp_path)
    cm.client().create_user("alice")
    cm.client().create_user("bob")
    try:
        yield cm
    finally:
        cm.stop()


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """An image store holding one real 16 MiB qcow2 image, base.qcow2."""
    d = tmp_path / "images"
    d.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(d / "base.qcow2"), "16M"],
                   check=True)
    return d


@pytest.fixture(scope="session", autouse=True)
def _stop_private_postgres() -> Iterator[None]:
    """The session's private PostgreSQL (tests/pg.py), if a test started it."""
    yield
    from tests import pg
    pg.stop_server()
