"""Regenerate the Python stubs beside the protos: `python tools/gen_protos.py`.

`--check` regenerates into a scratch folder and fails when the committed
stubs differ, which is how CI catches stale stubs.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PKG = Path("tashi") / "v1"


def generate(out: Path) -> list[str]:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PKG).glob("*.proto"))
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    return sorted(p.name for p in (out / PKG).glob("*_pb2*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when committed stubs are stale")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        names = generate(Path(tmp))
        committed = sorted(p.name for p in (PROTO_ROOT / PKG).glob("*_pb2*"))
        if ns.check:
            stale = [n for n in names if n not in committed]
            stale += [n for n in committed if n not in names]
            stale += [
                n for n in names
                if n in committed
                and not filecmp.cmp(Path(tmp) / PKG / n, PROTO_ROOT / PKG / n, shallow=False)
            ]
            if stale:
                sys.exit("stale generated stubs (run python tools/gen_protos.py): "
                         + ", ".join(stale))
            print(f"{len(names)} generated stubs are up to date")
            return
        for n in committed:
            (PROTO_ROOT / PKG / n).unlink()
        for n in names:
            shutil.copy(Path(tmp) / PKG / n, PROTO_ROOT / PKG / n)
        print(f"wrote {len(names)} stubs to {PROTO_ROOT / PKG}")


if __name__ == "__main__":
    main()
