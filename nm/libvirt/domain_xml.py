"""Domain XML built from plain values, and Tashi's metadata read back from it.

Pure: no libvirt import, so it is unit-tested on its own.  Every value goes
through ElementTree, so names and paths can never inject XML.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

# The namespace of our <metadata> element.  A domain carrying it is Tashi's;
# anything else on the host is never touched.
METADATA_NS = "urn:tashi:instance:1"
METADATA_PREFIX = "tashi"
VM_NAME_PREFIX = "tashi-"
MAX_DISKS = 16


def vm_name(instance_id: int) -> str:
    """The libvirt name of an instance: unique per cluster because ids are."""
    return f"{VM_NAME_PREFIX}{instance_id}"


@dataclass(frozen=True)
class MetaDisk:
    uri: str
    persistent: bool
    path: str  # the file the domain really opens (overlay or the image itself)


@dataclass(frozen=True)
class MetaNic:
    network_id: int
    mac: str = ""
    ip: str = ""


@dataclass(frozen=True)
class TashiMetadata:
    """The instance as this host runs it, enough to re-adopt it and report it to a
    CM that does not know it: `nics` are the NICs in effect, `asked_nics` the
    owner's spec (None: the same, as metadata written before they were told apart)."""

    instance_id: int
    owner: str
    name: str
    cores: int
    memory_mib: int
    disks: tuple[MetaDisk, ...] = ()
    nics: tuple[MetaNic, ...] = ()
    hints: dict[str, str] = field(default_factory=dict)
    asked_nics: tuple[MetaNic, ...] | None = None
    group_name: str = ""


@dataclass(frozen=True)
class DiskDevice:
    path: str
    fmt: str  # qcow2, raw
    target: str  # vda, vdb ...


@dataclass(frozen=True)
class NicDevice:
    bridge: str
    mac: str = ""
    mtu: int = 0
    tap: str = ""  # host-side device name; libvirt picks vnetN when empty
    model: str = "virtio"


@dataclass(frozen=True)
class DomainConfig:
    name: str
    domain_type: str
    memory_mib: int
    vcpus: int
    metadata: TashiMetadata
    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""
    disks: tuple[DiskDevice, ...] = ()
    nics: tuple[NicDevice, ...] = ()
    console_log: str = ""  # serial console (a pty) logged to this file, when set


def disk_target(index: int) -> str:
    if not 0 <= index < MAX_DISKS:
        raise ValueError(f"at most {MAX_DISKS} disks")
    return "vd" + chr(ord("a") + index)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def metadata_element(meta: TashiMetadata) -> ET.Element:
    """<tashi:instance> as libvirt stores it under <metadata>."""
    ns = "{" + METADATA_NS + "}"
    root = ET.Element(ns + "instance")
    _sub(root, ns + "id", str(meta.instance_id))
    _sub(root, ns + "owner", meta.owner)
    _sub(root, ns + "name", meta.name)
    _sub(root, ns + "cores", str(meta.cores))
    _sub(root, ns + "memory-mib", str(meta.memory_mib))
    disks = _sub(root, ns + "disks")
    for d in meta.disks:
        _sub(disks, ns + "disk", uri=d.uri, persistent="yes" if d.persistent else "no",
             path=d.path)
    nics = _sub(root, ns + "nics")
    for n in meta.nics:
        _sub(nics, ns + "nic", network=str(n.network_id), mac=n.mac, ip=n.ip)
    if meta.asked_nics is not None:
        asked = _sub(root, ns + "asked-nics")
        for n in meta.asked_nics:
            _sub(asked, ns + "nic", network=str(n.network_id), mac=n.mac, ip=n.ip)
    hints = _sub(root, ns + "hints")
    for key in sorted(meta.hints):
        _sub(hints, ns + "hint", meta.hints[key], key=key)
    if meta.group_name:
        _sub(root, ns + "group", meta.group_name)
    return root


def metadata_xml(meta: TashiMetadata) -> str:
    """The element alone, for virDomainSetMetadata."""
    ET.register_namespace(METADATA_PREFIX, METADATA_NS)
    return ET.tostring(metadata_element(meta), encoding="unicode")


def build(cfg: DomainConfig) -> str:
    ET.register_namespace(METADATA_PREFIX, METADATA_NS)
    dom = ET.Element("domain", type=cfg.domain_type)
    _sub(dom, "name", cfg.name)
    _sub(dom, "metadata").append(metadata_element(cfg.metadata))
    _sub(dom, "memory", str(cfg.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(cfg.vcpus))
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm")
    if cfg.kernel:
        _sub(os_el, "kernel", cfg.kernel)
        if cfg.initrd:
            _sub(os_el, "initrd", cfg.initrd)
        if cfg.cmdline:
            _sub(os_el, "cmdline", cfg.cmdline)
    else:
        _sub(os_el, "boot", dev="hd")
    features = _sub(dom, "features")
    _sub(features, "acpi")  # ShutdownVm is an ACPI power-button press
    _sub(features, "apic")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    for disk in cfg.disks:
        d = _sub(devices, "disk", type="file", device="disk")
        _sub(d, "driver", name="qemu", type=disk.fmt)
        _sub(d, "source", file=disk.path)
        _sub(d, "target", dev=disk.target, bus="virtio")
    for nic in cfg.nics:
        i = _sub(devices, "interface", type="bridge")
        _sub(i, "source", bridge=nic.bridge)
        if nic.mac:
            _sub(i, "mac", address=nic.mac)
        if nic.tap:
            _sub(i, "target", dev=nic.tap)
        _sub(i, "model", type=nic.model)
        if nic.mtu:
            _sub(i, "mtu", size=str(nic.mtu))
    if cfg.console_log:
        # The serial port is a pty, so libvirt's console stream can attach to it
        # read-write (AttachVmConsole), and everything it carries is also logged:
        # libvirt hands the log to virtlogd (qemu.conf stdio_handler = "logd", the
        # default), which rotates it by virtlogd.conf's max_size and max_backups.
        # <console> is the same device (serial0) seen as the domain's console.
        for tag, target in (("serial", {"port": "0"}),
                            ("console", {"type": "serial", "port": "0"})):
            chardev = _sub(devices, tag, type="pty")
            _sub(chardev, "log", file=cfg.console_log, append="on")
            _sub(chardev, "target", **target)
    _sub(devices, "memballoon", model="none")
    return ET.tostring(dom, encoding="unicode")


def _int(el: ET.Element | None, what: str) -> int:
    if el is None or el.text is None:
        raise ValueError(f"metadata lacks {what}")
    return int(el.text)


def parse_metadata(xml: str) -> TashiMetadata:
    """Read our metadata element (alone, or inside a whole domain XML)."""
    root = ET.fromstring(xml)
    ns = "{" + METADATA_NS + "}"
    if root.tag == "instance":  # virDomainGetMetadata answers without the namespace
        ns = ""
    inst = root if root.tag == ns + "instance" else root.find(f"metadata/{ns}instance")
    if inst is None:
        raise ValueError("no Tashi metadata")
    disks = tuple(
        MetaDisk(uri=d.get("uri", ""), persistent=d.get("persistent") == "yes",
                 path=d.get("path", ""))
        for d in inst.iterfind(f"{ns}disks/{ns}disk"))
    def nic_list(path: str) -> tuple[MetaNic, ...]:
        return tuple(MetaNic(network_id=int(n.get("network", "0")), mac=n.get("mac", ""),
                             ip=n.get("ip", ""))
                     for n in inst.iterfind(f"{path}/{ns}nic"))

    asked = inst.find(ns + "asked-nics")
    hints = {h.get("key", ""): h.text or "" for h in inst.iterfind(f"{ns}hints/{ns}hint")}
    return TashiMetadata(
        instance_id=_int(inst.find(ns + "id"), "id"),
        owner=inst.findtext(ns + "owner") or "",
        name=inst.findtext(ns + "name") or "",
        cores=_int(inst.find(ns + "cores"), "cores"),
        memory_mib=_int(inst.find(ns + "memory-mib"), "memory-mib"),
        disks=disks, nics=nic_list(ns + "nics"), hints=hints,
        asked_nics=nic_list(ns + "asked-nics") if asked is not None else None,
        group_name=inst.findtext(ns + "group") or "")


def retarget(xml: str, disks: tuple[str, ...], kernel: str, initrd: str,
             console_log: str) -> str:
    """A running domain's XML with its files moved to where the target host keeps
    them (disk i by its target dev, the kernel and initrd, the serial log, and the
    paths our metadata records), for a migration's destination XML."""
    ET.register_namespace(METADATA_PREFIX, METADATA_NS)
    dom = ET.fromstring(xml)
    by_dev = {d.find("target").get("dev"): d  # type: ignore[union-attr]
              for d in dom.findall("./devices/disk") if d.find("target") is not None}
    for i, path in enumerate(disks):
        disk = by_dev.get(disk_target(i))
        source = disk.find("source") if disk is not None else None
        if source is None:
            raise ValueError(f"the domain has no disk {disk_target(i)}")
        source.set("file", path)
    for tag, path in (("kernel", kernel), ("initrd", initrd)):
        el = dom.find(f"./os/{tag}")
        if el is not None and path:
            el.text = path
    if console_log:
        for chardev in dom.findall("./devices/serial") + dom.findall("./devices/console"):
            source = chardev.find("source")
            if source is not None and chardev.get("type") == "file":
                source.set("path", console_log)  # domains started before the pty serial
            if source is not None and chardev.get("type") == "pty":
                chardev.remove(source)  # this host's pty: the target allocates its own
                chardev.attrib.pop("tty", None)
            log_el = chardev.find("log")
            if log_el is not None:
                log_el.set("file", console_log)
    ns = "{" + METADATA_NS + "}"
    recorded = dom.findall(f"./metadata/{ns}instance/{ns}disks/{ns}disk")
    for el, path in zip(recorded, disks, strict=False):
        el.set("path", path)
    return ET.tostring(dom, encoding="unicode")
