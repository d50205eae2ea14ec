"""`tashi watch` against a real CM: lines, filters, who may watch, and a watch that
outlives a CM restart without missing or repeating an event.  (A silent CM is
in tests/e2e/test_silent_cm.py.)"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.harness import (
    CMProcess,
    Process,
    bin_path,
    free_port,
    start_cm_at,
    stop_all,
    vm,
    wait_for,
)

EVENT_LINE = re.compile(r"^(\d+) ")


def run(cm: str, *args: str, user: str = "root") -> subprocess.CompletedProcess[str]:
    return subprocess.run([bin_path("tashi"), "--cm", cm, "--user", user, *args],
                          capture_output=True, text=True, timeout=60)


def test_watch_prints_events_filters_them_and_is_for_admins(tmp_path: Path) -> None:
    cm = start_cm_at(tmp_path, free_port())
    try:
        root = cm.client()
        root.create_user("alice")
        root.create_host("h1")
        made = root.create_instances(vm("web"))[0]
        done = run(cm.address, "watch", "--since", "0", "--count", "3")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert [line.split()[0] for line in lines] == ["1", "2", "3"], lines
        assert "HOST_CREATED host" in done.stdout and " h1 by root" in done.stdout

        one = run(cm.address, "watch", "--since", "0", "--kind", "instance", "--count", "1",
                  "-o", "json")
        assert one.returncode == 0, one.stderr
        event = json.loads(one.stdout)
        assert event["type"] == "EVENT_TYPE_INSTANCE_CREATED"
        assert event["instance"]["id"] == made.id and event["instance"]["name"] == "web"

        denied = run(cm.address, "watch", "--count", "1", user="alice")
        assert denied.returncode == 1 and "PERMISSION_DENIED" in denied.stderr, denied
    finally:
        stop_all(cm)


def test_watch_resumes_after_a_cm_restart_missing_nothing(tmp_path: Path) -> None:
    port = free_port()
    cm: CMProcess | None = start_cm_at(tmp_path, port)
    watch = None
    try:
        assert cm is not None
        root = cm.client()
        root.create_host("h1")
        watch = Process([bin_path("tashi"), "--cm", cm.address, "--user", "root", "watch",
                         "--since", "0"], tmp_path / "watch.log", ready=EVENT_LINE)
        root.create_instances(vm("a"))
        wait_for(lambda: any(" a Pending" in line for line in watch.lines), what="a shown")
        root.close()
        stop_all(cm)
        cm = None
        wait_for(lambda: "lost the cluster manager" in (tmp_path / "watch.log").read_text(),
                 what="the watch saying it lost the CM")
        cm = start_cm_at(tmp_path, port)  # the same store, the same address
        root = cm.client()
        root.create_instances(vm("b"))
        wait_for(lambda: any(" b Pending" in line for line in watch.lines), timeout=30,
                 what="b shown after the restart")
        log = (tmp_path / "watch.log").read_text()
        assert "reconnected to the cluster manager" in log, log
        seqs = [int(m.group(1)) for line in watch.lines if (m := EVENT_LINE.match(line))]
        assert seqs == list(range(1, len(seqs) + 1)), seqs
        assert watch.alive()
        root.close()
    finally:
        stop_all(watch, cm)
