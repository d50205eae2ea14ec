"""The domain XML builder and metadata parser, without libvirt."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from tashi.nm.libvirt import domain_xml as dx


def _meta(**kw: object) -> dx.TashiMetadata:
    base: dict[str, object] = dict(
        instance_id=7, owner="alice", name="web-1", cores=2, memory_mib=512,
        disks=(dx.MetaDisk("base.qcow2", False, "/s/overlays/tashi-7-vda.qcow2"),
               dx.MetaDisk("data.img", True, "/images/data.img")),
        nics=(dx.MetaNic(3, "56:00:00:00:07:00", "10.0.0.5"),),
        hints={"kernel": "vmlinuz", "x": "<&'\">"})
    base.update(kw)
    return dx.TashiMetadata(**base)  # type: ignore[arg-type]


def _config(**kw: object) -> dx.DomainConfig:
    base: dict[str, object] = dict(
        name="tashi-7", domain_type="qemu", memory_mib=512, vcpus=2, metadata=_meta(),
        kernel="/images/vmlinuz", initrd="/images/initrd", cmdline="console=ttyS0 quiet",
        disks=(dx.DiskDevice("/s/overlays/tashi-7-vda.qcow2", "qcow2", "vda"),
               dx.DiskDevice("/images/data.img", "raw", "vdb")),
        nics=(dx.NicDevice("tbr3", "56:00:00:00:07:00", 9000, "tt7n0"),),
        console_log="/s/console/tashi-7.log")
    base.update(kw)
    return dx.DomainConfig(**base)  # type: ignore[arg-type]


def test_domain_has_what_the_instance_asked_for() -> None:
    dom = ET.fromstring(dx.build(_config()))
    assert dom.get("type") == "qemu"
    assert dom.findtext("name") == "tashi-7"
    assert dom.findtext("memory") == "512" and dom.find("memory").get("unit") == "MiB"  # type: ignore[union-attr]
    assert dom.findtext("vcpu") == "2"
    assert dom.findtext("os/kernel") == "/images/vmlinuz"
    assert dom.findtext("os/initrd") == "/images/initrd"
    assert dom.findtext("os/cmdline") == "console=ttyS0 quiet"
    assert dom.find("features/acpi") is not None, "ACPI shutdown needs <acpi/>"
    disks = dom.findall("devices/disk")
    assert [(d.find("source").get("file"), d.find("driver").get("type"),  # type: ignore[union-attr]
             d.find("target").get("dev")) for d in disks] == [  # type: ignore[union-attr]
        ("/s/overlays/tashi-7-vda.qcow2", "qcow2", "vda"), ("/images/data.img", "raw", "vdb")]
    nic = dom.find("devices/interface")
    assert nic is not None and nic.get("type") == "bridge"
    assert nic.find("source").get("bridge") == "tbr3"  # type: ignore[union-attr]
    assert nic.find("mac").get("address") == "56:00:00:00:07:00"  # type: ignore[union-attr]
    assert nic.find("target").get("dev") == "tt7n0"  # type: ignore[union-attr]
    assert nic.find("mtu").get("size") == "9000"  # type: ignore[union-attr]
    for tag in ("serial", "console"):  # a pty (attachable) whose output is logged
        chardev = dom.find(f"devices/{tag}")
        assert chardev is not None and chardev.get("type") == "pty"
        assert chardev.find("log").attrib == {  # type: ignore[union-attr]
            "file": "/s/console/tashi-7.log", "append": "on"}
        assert chardev.find("target").get("port") == "0"  # type: ignore[union-attr]


def test_retarget_points_the_console_log_at_the_targets_file() -> None:
    """A running domain's XML (a pty libvirt allocated, as dumpxml shows it) moved
    to the target's paths: the log follows, the source's pty is dropped."""
    dom = ET.fromstring(dx.build(_config()))
    for chardev in dom.findall("devices/serial") + dom.findall("devices/console"):
        ET.SubElement(chardev, "source", path="/dev/pts/3")
    dom.find("devices/console").set("tty", "/dev/pts/3")  # type: ignore[union-attr]
    moved = ET.fromstring(dx.retarget(
        ET.tostring(dom, encoding="unicode"), ("/t/overlays/tashi-7-vda.qcow2",
                                               "/images/data.img"),
        "/images/vmlinuz", "/images/initrd", "/t/console/tashi-7.log"))
    for tag in ("serial", "console"):
        chardev = moved.find(f"devices/{tag}")
        assert chardev is not None and chardev.find("source") is None
        assert chardev.find("log").get("file") == "/t/console/tashi-7.log"  # type: ignore[union-attr]
    assert moved.find("devices/console").get("tty") is None  # type: ignore[union-attr]
    # a domain started with the serial logged to a plain file (before the pty)
    old = ET.fromstring("<domain><devices><serial type='file'><source path='/s/c.log'/>"
                        "</serial></devices></domain>")
    moved = ET.fromstring(dx.retarget(ET.tostring(old, encoding="unicode"), (), "", "",
                                      "/t/c.log"))
    assert moved.find("devices/serial/source").get("path") == "/t/c.log"  # type: ignore[union-attr]


def test_without_kernel_boots_from_disk_and_ignores_cmdline() -> None:
    dom = ET.fromstring(dx.build(_config(kernel="", initrd="", cmdline="")))
    assert dom.find("os/kernel") is None and dom.find("os/cmdline") is None
    assert dom.find("os/boot").get("dev") == "hd"  # type: ignore[union-attr]


def test_metadata_round_trips_through_domain_xml_and_alone() -> None:
    meta = _meta()
    assert dx.parse_metadata(dx.build(_config(metadata=meta))) == meta
    assert dx.parse_metadata(dx.metadata_xml(meta)) == meta
    # virDomainGetMetadata answers the element without its namespace
    bare = dx.metadata_xml(meta).replace("tashi:", "").replace(
        f' xmlns:tashi="{dx.METADATA_NS}"', "")
    assert dx.parse_metadata(bare) == meta
    # the owner's NICs as asked and the anti-affinity group round-trip too
    asked = _meta(asked_nics=(dx.MetaNic(0),), group_name="web")
    assert dx.parse_metadata(dx.build(_config(metadata=asked))) == asked


def test_hostile_values_stay_text() -> None:
    evil = "x'/><devices><disk type='block'><source dev='/dev/sda'/></disk></devices><a b='"
    xml = dx.build(_config(name=evil, cmdline=evil, metadata=_meta(name=evil, owner=evil)))
    dom = ET.fromstring(xml)
    assert dom.findtext("name") == evil
    assert len(dom.findall("devices/disk")) == 2
    assert dx.parse_metadata(xml).owner == evil


def test_domain_without_our_metadata_is_not_ours() -> None:
    with pytest.raises(ValueError):
        dx.parse_metadata("<domain><name>other</name><metadata><x xmlns='urn:other'/>"
                          "</metadata></domain>")


def test_disk_targets() -> None:
    assert [dx.disk_target(i) for i in (0, 1, 15)] == ["vda", "vdb", "vdp"]
    with pytest.raises(ValueError):
        dx.disk_target(dx.MAX_DISKS)
    assert dx.vm_name(12) == "tashi-12"
