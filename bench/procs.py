"""What a process costs, from Linux /proc: CPU seconds so far, resident memory
and threads.  Shared by the benches that charge work to the processes doing it."""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` and of its waited-for children
    (qemu-img) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICK


def cpu_use(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each named group of processes."""
    return {name: sum(cpu_seconds(p) for p in pids) for name, pids in groups.items()}


def proc_status(pid: int) -> tuple[int, int]:
    """(resident bytes, threads) of a process, from /proc/PID/status."""
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, threads


def children(pid: int, marker: str = "") -> list[int]:
    """Live child processes of `pid` whose command line holds `marker`."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                found.append(int(child))
    return found
