"""A cluster manager that goes silent without closing its connections (SIGSTOP) is
noticed by every follower, each within its bound, and each catches up after
SIGCONT (issue 16, silent failures).  Real processes: tashi-cm, tashi-scheduler,
tashi-accounting, a tashi-nm on libvirt's test driver, and `tashi watch`.

The bounds, counted from the moment the CM stops answering:
- the watchers (the scheduler's and accounting's informers, `tashi watch`)
  hold a stream with no deadline, so HTTP/2 keepalive finds the silence: a
  ping after KEEPALIVE_SECONDS (10 s) without traffic, given up
  KEEPALIVE_TIMEOUT_SECONDS (5 s) later: 15 s (runtime/server.py);
- a node manager calls the CM every heartbeat (here 0.5 s, 2 s by default)
  with a CALL_TIMEOUT (5 s) deadline: heartbeat + 5 s (5.5 s here, 7 s by
  default).
Each says so in one line: the informers "<name>: lost the cluster manager"
(and the scheduler's and accounting's metrics: `*_cm_connected` 0,
`*_cm_disconnects_total` counting),
the NM "cluster manager at ...: DEADLINE_EXCEEDED ... (reports buffered: N)",
`tashi watch` "lost the cluster manager" on stderr.  Allowed slack on a
shared 2-core machine: SLACK seconds.  After SIGCONT a VM created then is
placed by the scheduler, started by the NM, booked by accounting and shown
by the watch, and each follower says it is back.  The CM, for its part, does
not count its own pause against its hosts (cm/nodes.py, forgive_stall): the
VM running before stays Running throughout.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from tashi.nm.reporter import CALL_TIMEOUT
from tashi.runtime.accounting_client import AccountingClient
from tashi.runtime.server import KEEPALIVE_SECONDS, KEEPALIVE_TIMEOUT_SECONDS
from tashi.v1 import accounting_pb2 as apb
from tashi.v1 import resources_pb2 as pb
from tests.harness import (
    NMProcess,
    Process,
    SchedulerProcess,
    bin_path,
    metrics_address,
    scrape,
    start_accounting,
    start_cm,
    stop_all,
    up_host,
    vm,
    wait_for,
    wait_state,
)

pytestmark = [pytest.mark.slow]

HEARTBEAT = 0.5
SLACK = 3.0
WATCH_BOUND = KEEPALIVE_SECONDS + KEEPALIVE_TIMEOUT_SECONDS
NM_BOUND = HEARTBEAT + CALL_TIMEOUT
QUIET = 1.0
EVENT_LINE = re.compile(r"^(\d+) ")


class Follower:
    """One follower's log, read from an offset: when did a line matching a pattern
    first appear after `mark()`?"""

    def __init__(self, name: str, log: Path, lost: str, back: str, bound: float) -> None:
        self.name = name
        self.log = log
        self.lost = re.compile(lost)
        self.back = re.compile(back)
        self.bound = bound
        self._offset = 0

    def mark(self) -> None:
        self._offset = self.log.stat().st_size

    def seen(self, pattern: re.Pattern[str]) -> bool:
        with open(self.log, "rb") as f:
            f.seek(self._offset)
            return pattern.search(f.read().decode(errors="replace")) is not None


def first_times(followers: list[Follower], which: str, since: float,
                limit: float) -> dict[str, float]:
    """Seconds from `since` to each follower's first `which` ("lost"/"back") line."""
    found: dict[str, float] = {}
    deadline = since + limit
    while len(found) < len(followers) and time.monotonic() < deadline:
        for f in followers:
            if f.name not in found and f.seen(getattr(f, which)):
                found[f.name] = time.monotonic() - since
        time.sleep(0.1)
    return found


def link(address: str, prefix: str) -> tuple[float | None, float | None]:
    """(connected, disconnects) as a follower's metrics tell them."""
    samples = scrape(address)
    return (samples.get((f"{prefix}_cm_connected", ())),
            samples.get((f"{prefix}_cm_disconnects_total", ())))


def ledger_states(acct: AccountingClient, iid: int) -> set[int]:
    entries = acct.list_events(apb.ListEventsRequest(instance_id=iid))
    return {e.event.instance.status.state for e in entries if e.HasField("event")}


def test_every_follower_notices_a_silent_cm_and_catches_up(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    cm = start_cm(tmp_path, images=str(tmp_path / "images"))
    root = cm.client()
    nm = sched = acct_proc = watch = None
    acct = None
    try:
        root.create_host("h1")
        nm = NMProcess(tmp_path / "nm1", cm.address, "h1", heartbeat_seconds=HEARTBEAT)
        up_host(root, "h1")
        sched = SchedulerProcess(tmp_path / "sched", cm.address,
                                 "--metrics-listen", "127.0.0.1:0")
        (tmp_path / "acct").mkdir()
        acct_proc = start_accounting(tmp_path / "acct", cm.address,
                                     "--metrics-listen", "127.0.0.1:0")
        metrics = {"tashi_scheduler": metrics_address(sched),
                   "tashi_accounting": metrics_address(acct_proc)}
        acct = AccountingClient(acct_proc.address, timeout=10)
        watch = Process([bin_path("tashi"), "--cm", cm.address, "--user", "root", "watch",
                         "--since", "0"], tmp_path / "watch.log", ready=EVENT_LINE)

        before = root.create_instances(vm("before"))[0]
        wait_state(root, before.id, pb.INSTANCE_STATE_RUNNING, timeout=30)
        wait_for(lambda: pb.INSTANCE_STATE_RUNNING in ledger_states(acct, before.id),
                 what="accounting booking the first VM")
        wait_for(lambda: any(" before Running" in line for line in watch.lines),
                 what="the watch showing the first VM running")

        followers = [
            Follower("scheduler", sched.log_path, r"scheduler: lost the cluster manager",
                     r"scheduler: connected to the cluster manager", WATCH_BOUND),
            Follower("accounting", acct_proc.log_path, r"accounting: lost the cluster manager",
                     r"accounting: connected to the cluster manager", WATCH_BOUND),
            Follower("nm", nm.log_path,
                     r"cluster manager at \S+: (DEADLINE_EXCEEDED|UNAVAILABLE).*reports buffered",
                     r"cluster manager at \S+ reachable again", NM_BOUND),
            Follower("tashi watch", watch.log_path, r"tashi watch: lost the cluster manager",
                     r"tashi watch: reconnected to the cluster manager", WATCH_BOUND),
        ]
        for prefix, address in metrics.items():
            assert link(address, prefix) == (1, 0), prefix
        # Let every stream go quiet first: a ping gRPC sent with the last data (a BDP
        # probe) would otherwise find the silence sooner than keepalive does.
        time.sleep(QUIET)
        for f in followers:
            f.mark()
        cm.proc.send_signal(signal.SIGSTOP)  # alive, connections open, answering nothing
        stopped = time.monotonic()
        noticed = first_times(followers, "lost", stopped, WATCH_BOUND + SLACK + 2)
        # Their metrics say so too (each scrape waits out a 2 s probe of the CM).
        during = {prefix: link(address, prefix) for prefix, address in metrics.items()}
        for f in followers:
            f.mark()
        cm.proc.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        print("noticed after (s):", {k: round(v, 1) for k, v in noticed.items()})
        for f in followers:
            assert f.name in noticed, f"{f.name} did not notice the silent CM in time"
            assert noticed[f.name] <= f.bound + SLACK, (f.name, noticed[f.name], f.bound)
        assert during == {prefix: (0, 1) for prefix in metrics}, during

        back = first_times(followers, "back", resumed, 30)
        print("back after (s):", {k: round(v, 1) for k, v in back.items()})
        assert set(back) == {f.name for f in followers}, back

        # Catching up: a VM created after SIGCONT is placed (scheduler), started and
        # reported (NM), booked (accounting) and shown (tashi watch).  The test's own
        # client was idle through the pause too: its keepalive ping may still be
        # unanswered and end a call made now, so it asks on a fresh channel.
        root.close()
        root = cm.client()
        after = root.create_instances(vm("after"))[0]
        wait_state(root, after.id, pb.INSTANCE_STATE_RUNNING, timeout=30)
        wait_for(lambda: pb.INSTANCE_STATE_RUNNING in ledger_states(acct, after.id),
                 timeout=30, what="accounting booking the VM created after SIGCONT")
        wait_for(lambda: any(" after Running" in line for line in watch.lines), timeout=30,
                 what="the watch showing the VM created after SIGCONT")
        for prefix, address in metrics.items():
            assert wait_for(lambda a=address, p=prefix: link(a, p) == (1, 1)), prefix
        # The CM does not blame its host for its own pause: nothing went down, no VM
        # was orphaned (it used to: no heartbeat for expire_host_seconds, all hosts).
        assert root.get_instance(before.id).status.state == pb.INSTANCE_STATE_RUNNING
        assert not [line for line in watch.lines if "Orphaned" in line or "stopped answering"
                    in line], watch.lines
        assert "the cluster manager did not run for" in cm.log_path.read_text()
        # The watch showed every event once, in order, none missed, across the reconnect.
        seqs = [int(m.group(1)) for line in watch.lines if (m := EVENT_LINE.match(line))]
        assert seqs == list(range(1, len(seqs) + 1)), seqs
        for proc in (nm, sched, acct_proc, watch):
            assert proc.alive(), proc.log_tail()
    finally:
        cm.proc.send_signal(signal.SIGCONT)
        if acct is not None:
            acct.close()
        root.close()
        stop_all(watch, sched, acct_proc, nm, cm)
