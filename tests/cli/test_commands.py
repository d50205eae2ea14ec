"""The `tashi` command against a real cluster manager process."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from pathlib import Path

import yaml

from tests.harness import CMProcess, bin_path, start_cm


def tashi(cm: CMProcess, *args: str, user: str = "root") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TASHI_CM": cm.address, "TASHI_USER": user}
    return subprocess.run([bin_path("tashi"), *args], capture_output=True, text=True, env=env,
                          timeout=30)


def ok(cm: CMProcess, *args: str, user: str = "root") -> str:
    res = tashi(cm, *args, user=user)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_walkthrough_and_formats(cm: CMProcess) -> None:
    ok(cm, "addUser", "--name", "alice")
    ok(cm, "addImage", "--name", "base.qcow2", "--owner", "alice")
    ok(cm, "addHost", "--name", "node1", "--notes", "rack 1")
    ok(cm, "addNetwork", "--id", "11", "--name", "jumbo", "--vxlan", "11", "--group",
       "239.1.1.11", "--mtu", "9000", "--default")
    out = ok(cm, "createVm", "--name", "db", "--cores", "2", "--memory", "1024",
             "--disks", "base.qcow2:persistent", "--nics", "11", "--hints", "densePack=True",
             user="alice")
    assert "db" in out and "Pending" in out
    ok(cm, "createMany", "--basename", "web", "--count", "3", user="alice")
    rows = json.loads(ok(cm, "getInstances", "-o", "json"))
    assert {r["name"] for r in rows} == {"db", "web-0", "web-1", "web-2"}
    db = next(r for r in rows if r["name"] == "db")
    # JSON keeps what was asked (spec) apart from what the system decided (status).
    assert db["status"]["state"] == "Pending"
    assert db["spec"]["cores"] == 2 and db["spec"]["memory_mib"] == 1024
    assert db["spec"]["disks"] == [{"uri": "base.qcow2", "persistent": True, "format": "qcow2"}]
    assert db["spec"]["nics"][0]["network_id"] == 11
    assert db["spec"]["hints"] == {"densePack": "True"}
    assert db["status"]["nics"][0]["network_id"] == 11 and db["status"]["nics"][0]["mac"]
    table = ok(cm, "getMyInstances", "--show-group_name", "--hide-state_reason", user="alice")
    header = table.splitlines()[0].split()
    assert header[-1] == "group_name" and "state_reason" not in header
    assert header[:7] == ["id", "name", "owner", "state", "host_name", "cores", "memory_mib"]
    data = list(csv.DictReader(io.StringIO(ok(cm, "getInstances", "-o", "csv"))))
    assert len(data) == 4 and data[0]["state"] == "Pending" and data[0]["cores"] == "2"
    hosts = yaml.safe_load(ok(cm, "-o", "yaml", "getHosts"))
    assert hosts[0]["name"] == "node1" and hosts[0]["notes"] == "rack 1"
    assert hosts[0]["state"] == "Normal" and hosts[0]["up"] is False
    ok(cm, "setHostState", "--host", "node1", "--state", "drained")
    ok(cm, "setHostNotes", "--host", "node1", "--notes", "rack 2")
    ok(cm, "addReservation", "--host", "node1", "--user", "alice")
    res = json.loads(ok(cm, "getReservation", "--host", "node1", "-o", "json"))
    assert res == [{"host_id": 1, "host_name": "node1", "users": ["alice"]}]
    ok(cm, "delReservation", "--host", "node1", "--user", "alice")
    nets = json.loads(ok(cm, "getNetworks", "-o", "json"))
    assert nets[0]["kind"] == "vxlan" and nets[0]["mtu"] == 9000
    image = json.loads(ok(cm, "getImages", "-o", "json"))[0]
    assert image["name"] == "base.qcow2" and image["format"] == "qcow2"
    assert image["owner"] == "alice" and image["in_use"] == 1
    assert image["virtual_size_bytes"] == 16 << 20
    users = json.loads(ok(cm, "getUsers", "-o", "json"))
    assert {u["name"]: u["admin"] for u in users} == {"root": True, "alice": False}
    ok(cm, "destroyMany", "--basename", "web", user="alice")
    ok(cm, "destroyVm", "--instance", "db", user="alice")
    assert json.loads(ok(cm, "getInstances", "-o", "json")) == []
    ok(cm, "delHost", "--host", "node1")


def test_errors_are_one_line(cm: CMProcess) -> None:
    ok(cm, "addUser", "--name", "alice")
    ok(cm, "createVm", "--name", "mine", user="alice")
    cases = [
        (("createVm", "--name", "bad name"), "alice", "INVALID_ARGUMENT"),
        (("createVm", "--name", "big", "--cores", "99"), "alice", "between 1 and 8"),
        (("destroyVm", "--instance", "mine"), "bob", "UNAUTHENTICATED"),
        (("addHost", "--name", "h"), "alice", "PERMISSION_DENIED"),
        (("pauseVm", "--instance", "mine"), "alice", "Pending"),
        (("getInstances", "--show-nonsense"), "alice", "no column"),
        (("createVm", "--name", "x", "--nics", "zz"), "alice", "network is a number"),
    ]
    for args, user, words in cases:
        res = tashi(cm, *args, user=user)
        assert res.returncode != 0, args
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, res.stderr)
        assert "Traceback" not in res.stderr
    down = subprocess.run([bin_path("tashi"), "--cm", "127.0.0.1:1", "--timeout", "2",
                           "getHosts"], capture_output=True, text=True, timeout=30)
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1


def test_every_tashi_command_exists() -> None:
    from tashi.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    expected = ("createVm createMany shutdownVm shutdownMany destroyVm destroyMany pauseVm "
                "unpauseVm suspendVm resumeVm migrateVm getHosts getUsers getNetworks "
                "getInstances getMyInstances getImages addUser addHost delHost setHostState "
                "setHostNotes addReservation delReservation getReservation addNetwork").split()
    missing = [c for c in expected if c not in sub.choices]  # type: ignore[union-attr]
    assert not missing


def test_config_file_and_flags(tmp_path: Path) -> None:
    conf = tmp_path / "cm.toml"
    conf.write_text('max-cores = 2\nadmins = ["root", "ops"]\n')
    proc = start_cm(tmp_path, config=str(conf))
    try:
        res = tashi(proc, "createVm", "--name", "x", "--cores", "3")
        assert "between 1 and 2" in res.stderr
        assert tashi(proc, "getUsers", user="ops").returncode == 0
    finally:
        proc.stop()
    bad = tmp_path / "bad.toml"
    bad.write_text("max_corez = 2\n")
    res = subprocess.run([bin_path("tashi-cm"), "--config", str(bad), "--listen", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode != 0 and "unknown setting 'max_corez'" in res.stderr


def test_get_slots_counts_what_fits_by_the_one_fit_rule() -> None:
    from tashi.cli.scheduling_cmds import slots_on
    from tashi.v1 import resources_pb2 as pb

    h = pb.Host(up=True, state=pb.HOST_STATE_NORMAL, cores=8, memory_mib=8192,
                used_cores=3, used_memory_mib=1024)
    assert slots_on(h, 2, 1024) == 2  # cores bound: 5 // 2
    assert slots_on(h, 1, 4096) == 1  # memory bound: 7168 // 4096
    assert slots_on(h, 6, 128) == 0
    h.state = pb.HOST_STATE_DRAINED
    assert slots_on(h, 1, 128) == 0


def test_tables_flatten_spec_and_status_into_the_known_columns() -> None:
    from tashi.cli.instances_cmds import INSTANCE_COLUMNS
    from tashi.cli.render import flatten, render, to_dict
    from tashi.v1 import resources_pb2 as pb

    inst = pb.Instance(id=3, name="db", owner="alice",
                       spec=pb.InstanceSpec(cores=2, memory_mib=1024, nics=[pb.Nic()]),
                       status=pb.InstanceStatus(
                           state=pb.INSTANCE_STATE_HELD, reason="full",
                           nics=[pb.Nic(network_id=1, mac="52:54:00:00:00:01")]))
    row = flatten(to_dict(inst))
    assert {k: row[k] for k in INSTANCE_COLUMNS} == {
        "id": 3, "name": "db", "owner": "alice", "state": "Held", "host_name": "",
        "cores": 2, "memory_mib": 1024, "state_reason": "full"}
    assert row["nics"][0]["mac"] == "52:54:00:00:00:01" and row["spec_nics"][0]["network_id"] == 0
    lines = render([row], "table", INSTANCE_COLUMNS).splitlines()
    assert lines[0].split() == INSTANCE_COLUMNS and lines[2].split()[:4] == ["3", "db", "alice",
                                                                             "Held"]
