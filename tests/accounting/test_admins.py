"""Accounting's admins are the cluster manager's: one list, asked of the CM."""

from __future__ import annotations

from pathlib import Path

from tashi.accounting.admins import CmAdmins
from tests.harness import free_port, inproc_cm


def test_admins_come_from_the_cluster_manager(tmp_path: Path) -> None:
    with inproc_cm(tmp_path, admins=["root", "ops"]) as cm:
        cm.client().create_user("alice")
        admins = CmAdmins(cm.address, "root", ttl_seconds=0.0)
        assert "root" in admins and "ops" in admins
        assert "alice" not in admins and "service:tashi-cm" not in admins


def test_before_the_cluster_manager_answers_nobody_is_an_admin() -> None:
    admins = CmAdmins(f"127.0.0.1:{free_port()}", "root")
    assert "root" not in admins
