"""Live migration pieces: the target's claims (a cookie per expected VM, lapsing
if it never arrives) and the source's send."""

from __future__ import annotations

import json
import threading
import time
import uuid
from urllib.parse import urlsplit

import libvirt

from tashi.nm.errors import HypervisorError, InvalidArgument

RECEIVE_CLAIM_SECONDS = 600.0  # a migration that never arrives frees its memory after this


class Claims:
    """Cookies of migrations this host expects, each naming one instance."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claims: dict[str, tuple[int, float]] = {}

    def make(self, instance_id: int) -> str:
        token = uuid.uuid4().hex
        with self._lock:
            self._claims[token] = (instance_id, time.monotonic() + RECEIVE_CLAIM_SECONDS)
        return json.dumps({"instance_id": instance_id, "token": token})

    def lapsed(self) -> list[int]:
        """Forget claims past their time; answers the instance ids they held."""
        now = time.monotonic()
        with self._lock:
            gone = [t for t, (_iid, until) in self._claims.items() if until < now]
            return [self._claims.pop(t)[0] for t in gone]

    def expected(self, cookie: str) -> tuple[str, int]:
        """(token, instance id) of a cookie this host made; 0 when it expects nothing."""
        try:
            token = str(json.loads(cookie)["token"])
        except (ValueError, KeyError, TypeError):
            raise InvalidArgument("migration cookie is not one this node manager made") from None
        with self._lock:
            return token, self._claims.get(token, (0, 0.0))[0]

    def take(self, token: str) -> None:
        with self._lock:
            self._claims.pop(token, None)


def send(dom: libvirt.virDomain, target_uri: str, copy_disks: bool, instance_id: int) -> None:
    """Live-migrate `dom` to the hypervisor at `target_uri` (disk copies when not shared)."""
    flags = libvirt.VIR_MIGRATE_LIVE
    if copy_disks:
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC
    try:
        dconn = libvirt.open(target_uri)
    except libvirt.libvirtError as exc:
        raise HypervisorError(f"cannot reach target hypervisor {target_uri}: "
                              f"{exc.get_error_message() or exc}") from None
    try:
        dom.migrate3(dconn, {}, flags)
    except libvirt.libvirtError as exc:
        raise HypervisorError(f"migration of instance {instance_id} failed: "
                              f"{exc.get_error_message() or exc}") from None
    finally:
        dconn.close()


MIGRATION_SCHEMES = frozenset({"qemu+tcp", "qemu+tls"})


def check_target_uri(uri: str) -> None:
    """Only another host's QEMU, over libvirt's TCP or TLS transport: never a local
    file (test:///etc/shadow once answered with the file's first line), a command
    (qemu+ssh's ?command=), nor options of libvirt's client in a query."""
    parts = urlsplit(uri)
    if (parts.scheme not in MIGRATION_SCHEMES or not parts.hostname or parts.query
            or parts.fragment or parts.path not in ("/system", "/session")):
        raise InvalidArgument("the target must be qemu+tcp://HOST/system or "
                              "qemu+tls://HOST/system")
