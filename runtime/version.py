"""The release every service reports, and which node manager versions a CM accepts."""

from __future__ import annotations

from importlib import metadata

try:
    VERSION = metadata.version("tashi")
except metadata.PackageNotFoundError:  # running from a tree that is not installed
    VERSION = "0.0.0"


def compatible(ours: str, theirs: str) -> bool:
    """Same major and minor release: the wire contracts only grow within one."""
    return ours.split(".")[:2] == theirs.split(".")[:2]
