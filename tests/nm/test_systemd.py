"""The shipped systemd units pass `systemd-analyze verify` with the binaries installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
SERVICES = ("tashi-cm", "tashi-nm", "tashi-scheduler", "tashi-accounting")
INSTALLED_AT = "/opt/tashi/bin"  # where deploy/systemd/README.md installs the venv


def _installed(tmp_path: Path, bindir: str) -> list[Path]:
    out = []
    for name in SERVICES:
        text = (UNITS / f"{name}.service").read_text()
        unit = tmp_path / f"{name}.service"
        unit.write_text(text.replace(INSTALLED_AT, bindir))
        out.append(unit)
    return out


def _verify(units: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", *map(str, units)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_units_verify(tmp_path: Path) -> None:
    for name in SERVICES:
        text = (UNITS / f"{name}.service").read_text()
        assert f"ExecStart={INSTALLED_AT}/{name} " in text
    bindir = str(Path(sys.executable).parent)  # the console scripts of this install
    ok = _verify(_installed(tmp_path, bindir))
    assert ok.returncode == 0 and "tashi" not in ok.stderr, ok.stderr
    # and the check is real: a unit whose program is missing is refused
    (tmp_path / "bad").mkdir()
    bad = _verify(_installed(tmp_path / "bad", "/nonexistent/bin"))
    assert bad.returncode != 0 and "not executable" in bad.stderr
