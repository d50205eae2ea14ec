"""Placement hints a user sets with `createVm --hints k=v,...`.

Tashi's hints, kept as they were:
- `targetHost=NAME|ID`: place on this host only.
- `allowElsewhere=True`: if the target host cannot take the VM, any host will do.
- `densePack=True|False`: pack this VM (best fit: the host left with the least room) or spread it,
  overriding the scheduler's default policy.

Ours, for anti-affinity (VMs of one group on distinct hosts):
- an instance's `group_name` (`tashi createVm --group G`, never set
  implicitly: createMany leaves it empty) makes it anti-affine with the other
  VMs of the same owner in that group: no two of them share a host;
- `antiAffinityGroup=G` names the group in a hint instead (it wins over
  `group_name`);
- `antiAffinity=False` keeps a grouped VM out of the rule.
Groups are per owner, so one user's group never blocks another's VMs.
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
    group = hints.get("antiAffinityGroup", "").strip() or group_name.strip()
    if parse_bool(hints.get("antiAffinity")) is False:
        group = ""
    return Hints(
        target_host=hints.get("targetHost", "").strip(),
        allow_elsewhere=bool(parse_bool(hints.get("allowElsewhere"))),
        dense_pack=parse_bool(hints.get("densePack")),
        anti_affinity_group=group,
    )
