#!/usr/bin/env bash
# Set up a fresh Debian 12 machine for Tashi: Debian packages (as root), then a
# virtualenv in .venv with the project installed editable.  Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    missing=$(grep -v '^\s*#' .ci/apt-packages.txt | grep -v '^\s*$' | while read -r p; do
        dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
    if [ -n "$missing" ]; then
        apt-get update -qq
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
else
    echo "setup: not root; assuming the Debian packages in .ci/apt-packages.txt are installed" >&2
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev]'
