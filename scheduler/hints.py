"""Placement hints a user sets with `createVm --hints k=v,...`.

Tashi's hints, kept as they were:
- `targetHost=NAME|ID`: place on this host only.
- `allowElsewhere=True`: if the target host cannot take the VM, any host will do.
- `densePack=True|False`: pack this VM (most VMs that still fit) or spread it,
  overriding the scheduler's default policy.

Ours, for anti-affinity (VMs of one group on distinct hosts):
- `antiAffinityGroup=G`: the VM never shares a host with another VM of the
  same owner carrying the same `antiAffinityGroup`.
- `antiAffinity=True`: the same, with the instance's `group_name` (which
  `createMany` sets to the base name) as the group.
Anti-affinity is opt-in through a hint rather than implied by `group_name`,
because Tashi's `createMany` puts every VM of a batch into one group and
users rely on a batch of 500 landing on 4 hosts.
"""

from __future__ import annotations

from collections.abc import Mapping

from tashi.scheduler.model import Hints

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})


def parse_bool(value: str | None) -> bool | None:
    """Tashi wrote `True`; accept the usual spellings, None when absent or unreadable."""
    if value is None:
        return None
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


def parse_hints(hints: Mapping[str, str], group_name: str = "") -> Hints:
    group = hints.get("antiAffinityGroup", "").strip()
    if not group and parse_bool(hints.get("antiAffinity")):
        group = group_name
    return Hints(
        target_host=hints.get("targetHost", "").strip(),
        allow_elsewhere=bool(parse_bool(hints.get("allowElsewhere"))),
        dense_pack=parse_bool(hints.get("densePack")),
        anti_affinity_group=group,
    )
