"""Type-check the installed package layout: `python tools/typecheck.py`.

The top-level folders become `tashi.cm`, `tashi.nm`, ... only through
setuptools' package-dir mapping, which mypy cannot follow through an
editable install (every `tashi.*` import would silently be `Any`).  This
builds the `tashi` package as a tree of links in a scratch directory and
checks it as one package, so imports between services are really checked.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        mapping: dict[str, str] = tomllib.load(fh)["tool"]["setuptools"]["package-dir"]
    with tempfile.TemporaryDirectory(prefix="tashi-typecheck-") as tmp:
        for package, folder in sorted(mapping.items()):
            link = Path(tmp, *package.split("."))
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(ROOT / folder, target_is_directory=True)
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
               "-p", "tashi", *sys.argv[1:]]
        env = {"MYPYPATH": tmp, "PATH": "/usr/bin:/bin"}
        return subprocess.run(cmd, cwd=tmp, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
