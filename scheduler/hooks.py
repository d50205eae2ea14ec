"""Pre-create and post-destroy hooks, as Tashi had for DHCP and DNS.

A hook sees every instance the scheduler learns of (`observe`, also used to
rebuild its state after a relist, following `reset`), is asked before a
placement is proposed (`pre_create`: it may give NIC addresses or veto the
placement with a reason), is told when the CM refused that proposal
(`cancel`) and when an instance is gone (`post_destroy`).  Hooks run in the
scheduler's single agent thread, so they need no locking.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from tashi.scheduler.model import HostView, VmSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    id: int
    name: str = ""
    # Address range NIC addresses are allocated from ("" for none).
    cidr: str = ""


@dataclass(frozen=True, slots=True)
class PreCreate:
    # Address per NIC index; "" leaves that NIC as it is.
    nic_ips: tuple[str, ...] = ()
    # Non-empty: the VM must not be placed now, for this reason.
    refusal: str = ""


class Hook:
    """Base with no-op defaults; a hook overrides what it needs."""

    def reset(self) -> None:
        """Forget everything: a relist follows with `network` and `observe` calls."""

    def network(self, net: NetworkInfo) -> None:
        """A network exists or changed."""

    def network_deleted(self, net_id: int) -> None:
        """A network was deleted."""

    def observe(self, vm: VmSpec) -> None:
        """An instance as it now is (from a relist, an event or an accepted proposal)."""

    def pre_create(self, vm: VmSpec, host: HostView) -> PreCreate:
        return PreCreate()

    def cancel(self, vm: VmSpec) -> None:
        """The proposal prepared by `pre_create` was not accepted."""

    def post_destroy(self, vm: VmSpec) -> None:
        """The instance is gone."""


class HookChain(Hook):
    """Runs hooks in order.  A veto cancels what earlier hooks prepared; NIC
    addresses from later hooks win over earlier ones for the same NIC."""

    def __init__(self, hooks: Sequence[Hook] = ()) -> None:
        self.hooks = list(hooks)

    def reset(self) -> None:
        for hook in self.hooks:
            hook.reset()

    def network(self, net: NetworkInfo) -> None:
        for hook in self.hooks:
            hook.network(net)

    def network_deleted(self, net_id: int) -> None:
        for hook in self.hooks:
            hook.network_deleted(net_id)

    def observe(self, vm: VmSpec) -> None:
        for hook in self.hooks:
            hook.observe(vm)

    def pre_create(self, vm: VmSpec, host: HostView) -> PreCreate:
        ips = [""] * len(vm.networks)
        done: list[Hook] = []
        for hook in self.hooks:
            answer = hook.pre_create(vm, host)
            if answer.refusal:
                for earlier in reversed(done):
                    earlier.cancel(vm)
                return PreCreate(refusal=answer.refusal)
            done.append(hook)
            for i, ip in enumerate(answer.nic_ips[:len(ips)]):
                if ip:
                    ips[i] = ip
        return PreCreate(nic_ips=tuple(ips) if any(ips) else ())

    def cancel(self, vm: VmSpec) -> None:
        for hook in reversed(self.hooks):
            hook.cancel(vm)

    def post_destroy(self, vm: VmSpec) -> None:
        for hook in self.hooks:
            try:
                hook.post_destroy(vm)
            except Exception:  # one failing hook must not keep others from cleaning up
                log.exception("post-destroy hook %s failed for instance %d",
                              type(hook).__name__, vm.id)
