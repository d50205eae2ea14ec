"""`tashi-scheduler`: its settings, and a process that waits for a CM that is not up yet."""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tashi.scheduler.main import parse_config
from tests.harness import (
    CONNECTED_RE,
    Process,
    bin_path,
    free_port,
    start_cm,
    stop_all,
    wait_states,
)
from tests.scheduler.support import add_hosts, spec


def test_defaults_file_and_flags(tmp_path: Path) -> None:
    config = parse_config([])
    assert (config.cm, config.user, config.policy) == ("127.0.0.1:9882", "root", "spread")
    toml = tmp_path / "sched.toml"
    toml.write_text('policy = "densePack"\nbatch-size = 10\nresync_seconds = 30\n')
    config = parse_config(["--config", str(toml), "--batch-size", "20"])
    assert (config.policy, config.batch_size, config.resync_seconds) == ("densePack", 20, 30.0)


@pytest.mark.parametrize("argv, message", [
    (["--policy", "random"], "policy must be spread or densePack"),
    (["--batch-size", "0"], "at least 1"),
])
def test_bad_settings_are_refused(argv: list[str], message: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_config(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_unknown_setting_in_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = tmp_path / "sched.toml"
    toml.write_text("polcy = 'spread'\n")
    with pytest.raises(SystemExit):
        parse_config(["--config", str(toml)])
    assert "unknown setting 'polcy'" in capsys.readouterr().err


def test_waits_for_a_cm_that_comes_up_later(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    address = f"127.0.0.1:{free_port()}"
    log = open(tmp_path / "sched.log", "wb")
    sched = subprocess.Popen([bin_path("tashi-scheduler"), "--cm", address],
                             stdout=subprocess.PIPE, stderr=log, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in sched.stdout or ()],
                     daemon=True).start()
    cm: Process | None = None
    try:
        time.sleep(1.0)
        assert sched.poll() is None and lines.empty()  # still trying, not dead
        # On the address the scheduler has been trying all along.
        cm = start_cm(tmp_path, images=str(tmp_path / "images"), expire_host_seconds=3600,
                      listen=address)
        assert cm.address == address
        line = lines.get(timeout=20)
        assert CONNECTED_RE.search(line) and address in line
        root = cm.client()
        add_hosts(root, [(2, 2048)])
        root.create_instances(spec("late"))
        wait_states(root, activating=1)
    finally:
        stop_all(cm)
        sched.terminate()
        assert sched.wait(10) == 0  # SIGTERM is a clean stop
        if sched.stdout is not None:
            sched.stdout.close()
        log.close()
