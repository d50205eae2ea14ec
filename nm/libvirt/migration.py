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
from tashi.nm.libvirt import domain_xml as dx
from tashi.nm.model import MigrationPaths
from tashi.runtime.migration import uri_problem

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

    def forget(self, instance_id: int) -> None:
        """Drop every claim of `instance_id` (a failed or retried migration)."""
        with self._lock:
            for token in [t for t, (iid, _u) in self._claims.items() if iid == instance_id]:
                del self._claims[token]


def flags_for(target_uri: str, copy_disks: bool) -> int:
    """Live and peer to peer (this host's libvirtd opens the target's, with its own
    certificate: the NM holds no connection to other hosts); over qemu+tls:// the
    memory and disk streams run over TLS too; local overlays are copied
    incrementally (their bases are in the image store both hosts see)."""
    flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
    if urlsplit(target_uri).scheme == "qemu+tls":
        flags |= libvirt.VIR_MIGRATE_TLS
    if copy_disks:
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC
    return flags


def send(dom: libvirt.virDomain, target_uri: str, copy_disks: tuple[str, ...], instance_id: int,
         paths: MigrationPaths | None) -> None:
    """Live-migrate `dom` to the hypervisor at `target_uri`, its files pointed at
    `paths` (where the target keeps them); `copy_disks` are the target devs of
    the disks to copy (local overlays; persistent disks are in the shared store)."""
    params: dict[str, object] = {}
    try:
        if paths is not None:
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE)
            params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = dx.retarget(
                xml, paths.disks, paths.kernel, paths.initrd, paths.console_log)
        if copy_disks:
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(copy_disks)
        dom.migrateToURI3(target_uri, params, flags_for(target_uri, bool(copy_disks)))
    except ValueError as exc:
        raise InvalidArgument(f"migration paths do not fit the domain: {exc}") from None
    except libvirt.libvirtError as exc:
        raise HypervisorError(f"migration of instance {instance_id} to {target_uri} failed: "
                              f"{exc.get_error_message() or exc}") from None


def check_target_uri(uri: str) -> None:
    problem = uri_problem(uri)
    if problem:
        raise InvalidArgument(problem)
