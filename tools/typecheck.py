"""Type-check the installed package layout: `python tools/typecheck.py`.

The top-level folders become `tashi.cm`, `tashi.nm`, ... only through
setuptools' package-dir mapping, which mypy cannot follow through an
editable install (every `tashi.*` import would silently be `Any`).  This
checks the `tashi` package as a tree of links (tools/package_tree.py) as one
package, so imports between services are really checked.
"""

from __future__ import annotations

import subprocess
import sys

from package_tree import ROOT, package_tree


def main() -> int:
    with package_tree() as tree:
        tmp = str(tree)
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
               "-p", "tashi", *sys.argv[1:]]
        env = {"MYPYPATH": tmp, "PATH": "/usr/bin:/bin"}
        return subprocess.run(cmd, cwd=tmp, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
