"""Check the import layering contracts in pyproject.toml: `python tools/lint_imports.py`.

lint-imports finds `tashi`'s modules by walking the package's folder, which the
editable install does not have (see tools/package_tree.py); so it runs on a
link tree of the package laid out exactly as pyproject.toml maps it, first on
PYTHONPATH so that it, not the editable install's import hook, is `tashi`.
Extra arguments go to lint-imports (e.g. --verbose, --contract ID).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from package_tree import ROOT, package_tree


def main() -> int:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) \
        or shutil.which("lint-imports")
    if exe is None:
        print("lint-imports not found: pip install -e '.[dev]'", file=sys.stderr)
        return 2
    with package_tree(regular=True) as tree:
        env = dict(os.environ, PYTHONPATH=str(tree))
        cmd = [exe, "--no-cache", "--no-logo", *sys.argv[1:], str(ROOT / "pyproject.toml")]
        return subprocess.run(cmd, cwd=tree, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
