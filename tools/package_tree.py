"""The installed `tashi` package as a tree of links, for tools that walk folders.

The top-level folders become `tashi.cm`, `tashi.nm`, ... only through
setuptools' package-dir mapping, which an editable install serves with an
import hook: `tashi` itself is then a namespace package with no folder, so
tools that find a package's files by walking its folder (mypy, grimp for
import-linter) see nothing.  `package_tree()` lays the package out as
pyproject.toml maps it, with a link per mapped folder, in a scratch directory
that tools can be pointed at (MYPYPATH, PYTHONPATH).
"""

from __future__ import annotations

import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def package_dirs() -> dict[str, str]:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        mapping: dict[str, str] = tomllib.load(fh)["tool"]["setuptools"]["package-dir"]
    return mapping


@contextmanager
def package_tree(regular: bool = False) -> Iterator[Path]:
    """A scratch directory holding `tashi/` as installed; `regular` adds an empty
    `tashi/__init__.py` for tools that want a regular package at the root."""
    with tempfile.TemporaryDirectory(prefix="tashi-tree-") as tmp:
        for package, folder in sorted(package_dirs().items()):
            link = Path(tmp, *package.split("."))
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(ROOT / folder, target_is_directory=True)
        if regular:
            Path(tmp, "tashi", "__init__.py").write_text("")
        yield Path(tmp)
