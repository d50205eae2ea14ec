"""The image catalogue: what the CM recorded of each image when it entered the
store (its format, detected then and never again; size; backing image;
owner), and who may use it how.

An image enters the catalogue when an admin adds it (`AddImage`) or when an
instance first names it (then as a site image, owner empty).  From then on
every instance's disk carries the recorded format to the node manager, which
opens the image with it: a guest that writes a qcow2 header into its raw
persistent disk cannot make the next start chain in another file.

Disk names are the store-relative paths the files resolve to, so the same
file named two ways (`./a.qcow2`, a symlink) is one image to every check.
A persistent disk is for the image's owner (site images: admins), only
while no other instance uses that image in any way and no image is backed
by it.  Without an image store (`--images` unset) nothing can be recorded:
the node manager then detects formats itself (still refusing backing files
outside the store) and persistent disks are for admins only.

Images are also made, changed and moved through the CM (`cm/image_ops.py`):
a record then shows READY, or COPYING while being written (no instance may
use it yet), or FAILED with the reason.  Hidden files (a name part starting
with '.') are never images: the CM writes its temporary files under such
names.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from tashi.cm import validation as v
from tashi.cm.cluster import Cluster
from tashi.cm.txn import Txn, copy_of
from tashi.runtime import qemu_img
from tashi.runtime.errors import denied, exists, invalid, not_found, precondition, unavailable
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb

# Longest image name (a path inside the store) the catalogue takes.
MAX_IMAGE_NAME = 255
# Files the CM is still writing (copies, uploads, flattens) and deleted files
# on their way out: hidden, so neither listed nor nameable as images.
TEMP_PREFIX = ".tashi-"


def _check_hidden(name: str) -> None:
    if any(part.startswith(".") for part in PurePosixPath(name).parts):
        raise invalid(f"image {v.clip(name)} is a hidden file (a name starting with '.'); "
                      "hidden files are not images")


def canonical(c: Cluster, uri: str) -> str:
    """The store-relative path `uri` resolves to (checked to stay inside, not hidden)."""
    if len(uri) > MAX_IMAGE_NAME:
        raise invalid(f"image name {v.clip(uri)} is longer than {MAX_IMAGE_NAME} characters")
    v.check_disk(uri, c.images)
    if c.images is None:
        return os.path.normpath(PurePosixPath(uri).as_posix())
    root = os.path.realpath(c.images)
    name = os.path.relpath(os.path.realpath(os.path.join(root, uri)), root)
    _check_hidden(name)
    return name


def new_name(c: Cluster, name: str) -> str:
    """The canonical name of an image about to be made: inside the store, in a
    folder that exists, not hidden, and neither a file nor a catalogue entry yet."""
    if c.images is None:
        raise precondition("this cluster manager has no image store (--images)")
    if not name:
        raise invalid("name the new image (a path inside the image store)")
    if len(name) > MAX_IMAGE_NAME:
        raise invalid(f"image name {v.clip(name)} is longer than {MAX_IMAGE_NAME} characters")
    if any(ord(ch) < 32 or ch == "\x7f" for ch in name):
        raise invalid(f"image name {v.clip(name)} holds a control character")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise invalid(f"image {v.clip(name)} is an absolute path; give a path inside the "
                      "image store")
    if ".." in path.parts:
        raise invalid(f"image {v.clip(name)} climbs out of the image store with '..'")
    norm = os.path.normpath(path.as_posix())
    if norm in ("", "."):
        raise invalid(f"image name {v.clip(name)} names the image store itself")
    _check_hidden(norm)
    root = os.path.realpath(c.images)
    parent = os.path.realpath(os.path.join(root, os.path.dirname(norm)))
    if parent != root and not qemu_img.inside(Path(root), parent):
        raise invalid(f"image {v.clip(name)} leads outside the image store")
    if not os.path.isdir(parent):
        raise not_found(f"no folder {v.clip(os.path.dirname(norm))} in the image store")
    full = os.path.join(parent, os.path.basename(norm))
    canon = os.path.relpath(full, root)
    _check_hidden(canon)
    if os.path.lexists(full) or canon in c.image_ids:
        raise exists(f"image {v.clip(canon)} already exists; delete it first or choose "
                     "another name")
    return canon


def ready(img: pb.Image) -> bool:
    """Complete and usable (records made before images had states count as ready)."""
    return img.state in (pb.IMAGE_STATE_READY, pb.IMAGE_STATE_UNSPECIFIED)


def check_ready(img: pb.Image) -> None:
    if img.state == pb.IMAGE_STATE_COPYING:
        raise precondition(f"image {v.clip(img.name)} is being written "
                           f"({img.progress_percent}% done); wait until it is ready")
    if img.state == pb.IMAGE_STATE_FAILED:
        raise precondition(f"image {v.clip(img.name)} failed ({img.reason}); delete it")


def check_source(c: Cluster, actor: str, img: pb.Image) -> None:
    """Images one may read whole (copy, clone, back, download): the site's
    (no owner) and one's own; admins any."""
    if img.owner and img.owner != actor and not c.is_admin(actor):
        raise denied(f"image {v.clip(img.name)} is {img.owner!r}'s; only its owner (or an "
                     "admin) may copy, clone, back onto or download it")


def check_owner(c: Cluster, actor: str, img: pb.Image, what: str) -> None:
    """Images one may change or delete: one's own; site images admins only."""
    if c.is_admin(actor):
        return
    if img.owner != actor:
        whose = f"{img.owner!r}'s" if img.owner else "a site image (admins only)"
        raise denied(f"image {v.clip(img.name)} is {whose}; only its owner may {what} it")


def _inspect(c: Cluster, name: str) -> qemu_img.ImageInfo:
    assert c.images is not None
    root = Path(os.path.realpath(c.images))
    try:
        return qemu_img.inspect(root / name, root)
    except qemu_img.ImageRefused as exc:
        raise invalid(str(exc)) from None
    except qemu_img.QemuImgError as exc:
        raise unavailable(f"cannot read image {v.clip(name)}: {exc}") from None


def _fill(c: Cluster, img: pb.Image, info: qemu_img.ImageInfo) -> None:
    assert c.images is not None
    root = os.path.realpath(c.images)
    img.format = info.format
    img.virtual_size_bytes = info.virtual_size
    img.backing = os.path.relpath(info.backing, root) if info.backing else ""
    img.size_bytes = os.path.getsize(os.path.join(root, img.name))


def record(c: Cluster, txn: Txn, name: str) -> pb.Image | None:
    """The catalogue's record of `name` (a canonical name), made now if the
    image has none yet; None without an image store."""
    if c.images is None:
        return None
    oid = c.image_ids.get(name)
    if oid is not None:
        return txn.staged.get(("image", oid)) or c.image_records[oid]  # type: ignore[return-value]
    for (kind, _oid), obj in txn.staged.items():  # recorded earlier in this request
        if kind == "image" and isinstance(obj, pb.Image) and obj.name == name:
            return obj
    img = pb.Image(id=c.next_id(txn, "image"), name=name, state=pb.IMAGE_STATE_READY)
    _fill(c, img, _inspect(c, name))
    img.create_time.GetCurrentTime()
    txn.put_quiet("image", img.id, img)
    return img


def disk(c: Cluster, txn: Txn, owner: str, asked: pb.Disk) -> pb.Disk:
    """The disk as the node manager gets it: canonical name, recorded format;
    a persistent disk checked against the image's owner and users."""
    name = canonical(c, asked.uri)
    img = record(c, txn, name)
    if img is not None:
        check_ready(img)
    if asked.persistent:
        if img is None:
            if not c.is_admin(owner):
                raise denied("this cluster manager has no image store, so image owners are "
                             "unknown: persistent disks are for admins only")
        else:
            if img.owner != owner and not (not img.owner and c.is_admin(owner)):
                whose = f"{img.owner!r}'s" if img.owner else "a site image (admins only)"
                raise denied(f"image {v.clip(name)} is {whose}; only its owner may use it as "
                             "a persistent disk")
            backed = [i.name for i in c.image_records.values() if i.backing == name]
            if backed:
                raise precondition(f"image {v.clip(name)} backs {v.clip(backed[0])}; writing it "
                                   "in place would corrupt that image")
    return pb.Disk(uri=name, persistent=asked.persistent, format=img.format if img else "")


def _uses(c: Cluster) -> dict[str, int]:
    counts: dict[str, int] = {}
    for inst in c.instances.values():
        for d in inst.spec.disks:
            counts[d.uri] = counts.get(d.uri, 0) + 1
    for img in c.image_records.values():
        if img.backing:
            counts[img.backing] = counts.get(img.backing, 0) + 1
    return counts


def list_images(c: Cluster) -> list[pb.Image]:
    """The store's files (a link leading out of the store is not one), each with
    what the catalogue recorded of it; a file not recorded yet shows no format."""
    if c.images is None or not c.images.is_dir():
        return []
    store = os.path.realpath(c.images)
    with c.lock:
        uses = _uses(c)
        records = {i.name: copy_of(i) for i in c.image_records.values()}
    out = []
    for root, dirs, files in os.walk(store):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for fname in sorted(files):
            if fname.startswith("."):
                continue
            path = os.path.join(root, fname)
            real = os.path.realpath(path)
            if not qemu_img.inside(Path(store), real) or not os.path.isfile(real):
                continue
            name = os.path.relpath(path, store)
            img = records.pop(name, None) or pb.Image(name=name)
            img.size_bytes = os.path.getsize(real)
            img.in_use = uses.get(name, 0)
            out.append(img)
    # A copy under way has no file under its name yet, a failed one may have none.
    out.extend(img for img in records.values() if not ready(img))
    return out


def add(c: Cluster, actor: str, req: cmpb.AddImageRequest) -> cmpb.AddImageResponse:
    def body(txn: Txn) -> cmpb.AddImageResponse:
        c.require_admin(actor, "add images")
        if c.images is None:
            raise precondition("this cluster manager has no image store (--images)")
        name = canonical(c, req.name)
        if req.owner:
            c.require_user(req.owner)
        old = c.image_records.get(c.image_ids.get(name, 0))
        if old is not None and old.state == pb.IMAGE_STATE_COPYING:
            check_ready(old)
        img = copy_of(old) if old is not None else pb.Image(id=c.next_id(txn, "image"),
                                                            name=name)
        _fill(c, img, _inspect(c, name))
        img.owner = req.owner
        img.state, img.reason, img.progress_percent = pb.IMAGE_STATE_READY, "", 0
        if old is None:
            img.create_time.GetCurrentTime()
        txn.put_quiet("image", img.id, img)
        return cmpb.AddImageResponse(image=img)

    if not req.name:
        raise invalid("name the image (a path inside the image store)")
    return c.mutate(actor, req.request_id, "AddImage", cmpb.AddImageResponse, body)
