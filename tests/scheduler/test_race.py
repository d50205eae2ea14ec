"""Two scheduler processes racing over one CM never overcommit a host."""

from __future__ import annotations

from pathlib import Path

from tashi.v1 import resources_pb2 as pb
from tests.harness import SchedulerProcess, start_cm, stop_all, wait_states
from tests.scheduler.support import activations, add_hosts, history, overcommits, spec

ACTIVATING, HELD = pb.INSTANCE_STATE_ACTIVATING, pb.INSTANCE_STATE_HELD
# Eight hosts of mixed sizes that hold exactly 400 VMs of 1 core, 1 GiB.
SIZES = [(80, 81920), (70, 71680), (60, 61440), (50, 51200), (50, 51200), (40, 40960),
         (30, 30720), (20, 20480)]


def test_two_schedulers_race_500_vms_onto_room_for_400(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    # Two admins, one per scheduler, so the history shows who placed what.
    cm = start_cm(tmp_path, images=str(tmp_path / "images"), expire_host_seconds=3600,
                  admins="root,sched1")
    scheds: list[SchedulerProcess] = []
    try:
        root = cm.client()
        root.create_user("alice")
        add_hosts(root, SIZES)
        # Small batches make the two interleave at the CM many times.
        scheds = [SchedulerProcess(tmp_path, cm.address, "--batch-size", "50",
                                   "--user", user, name=user) for user in ("root", "sched1")]
        cm.client("alice").create_instances(spec("race"), count=500)
        wait_states(root, activating=400, held=100, pending=0)
        for host in root.list_hosts():
            assert host.used_cores <= host.cores and host.used_memory_mib <= host.memory_mib
            assert host.used_cores == host.cores  # full: refusal was honest
        held = [i for i in root.list_instances() if i.status.state == HELD]
        assert all(i.status.reason.startswith("fits on no host") for i in held), \
            {i.status.reason for i in held}

        # Capacity appears: the Held ones are placed with no one asking.
        add_hosts(root, [(60, 61440), (40, 40960)], start=len(SIZES))
        wait_states(root, activating=500, held=0)

        events = history(root)
        assert overcommits(events) == []
        placed = activations(events)
        assert len(placed) == 500 and set(placed.values()) == {1}  # each placed once
        # Both schedulers really took part.
        actors = {e.actor for e in events if e.WhichOneof("subject") == "instance"
                  and e.instance.status.state == ACTIVATING}
        assert actors == {"root", "sched1"}
    finally:
        stop_all(*scheds, cm)
