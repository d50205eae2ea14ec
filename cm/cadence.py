"""How often hosts beat and how long a silence may last, for the fleet's size.

Every heartbeat costs the CM about a millisecond of CPU in gRPC Python (1.2 ms
measured at 1,000 hosts on the 2-core bench machine), so 1,000 hosts beating
every 2 s took 60% of a core before any VM was asked for.  As Nomad does, the
CM bounds the heartbeats it takes per second: each host is told the shortest
interval to beat at (the hosts it knows over `heartbeat_rate`), and the expiry
and decay stretch with it, so a host still has as many beats to miss before
it goes down.  Up to `heartbeat_rate` x 2 hosts nothing changes.

When the fleet shrinks (hosts deleted) the shorter interval is asked for at
once, but the longer expiry and decay stay for one of those expiries, by when
every host still beating at the interval it was told has beaten and heard the
new one (`settle`): otherwise deleting most of a large fleet could expire the
rest, still beating at the old pace, under the new, shorter expiry.
"""

from __future__ import annotations

from dataclasses import dataclass

from tashi.cm.config import CMConfig

# Beats a host may miss, at the stretched interval, before it goes down / shows
# decayed: the defaults' ratios (10 s and 5 s at 2 s beats).
EXPIRE_BEATS = 5.0
DECAY_BEATS = 2.5


@dataclass(frozen=True)
class Cadence:
    interval: float  # the shortest interval between one host's beats asked for
    expire: float  # a host not heard from this long is down
    decay: float  # ... this long shows decayed


def cadence(cfg: CMConfig, hosts: int) -> Cadence:
    """For `hosts` known hosts (up or not: one that comes back beats too, and the
    interval does not shrink when some go down)."""
    interval = hosts / cfg.heartbeat_rate if cfg.heartbeat_rate > 0 else 0.0
    return Cadence(interval=interval,
                   expire=max(cfg.expire_host_seconds, EXPIRE_BEATS * interval),
                   decay=max(cfg.decay_seconds, DECAY_BEATS * interval))


def settle(current: Cadence, shrunk_at: float | None, wanted: Cadence, now: float
           ) -> tuple[Cadence, float | None]:
    """The cadence in force after `current` (in force since the fleet shrank at
    `shrunk_at`, None if it did not) when the fleet's size asks for `wanted`: a
    longer expiry at once; a shorter one only after `current`'s expiry went by
    since the shrink, the shorter interval asked for meanwhile.  Returns it and
    when the shrink began."""
    if wanted.expire >= current.expire and wanted.decay >= current.decay:
        return wanted, None
    since = now if shrunk_at is None else shrunk_at
    if now - since >= current.expire:
        return wanted, None
    return Cadence(interval=wanted.interval, expire=current.expire,
                   decay=current.decay), since
