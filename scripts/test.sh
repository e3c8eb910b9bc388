#!/usr/bin/env bash
# The README's test command (and what .ci/run runs): provide what the tests need beyond the Python packages, then run
# the suite in the project's virtual environment. The Space's browser test drives Debian's Chromium (never
# `playwright install`, which downloads a browser build of its own).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null; then
    echo "scripts/test.sh: installing Debian's chromium for the Space's browser test (apt-get)" >&2
    as_root=()
    [ "$(id -u)" -eq 0 ] || as_root=(sudo)
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq chromium >/dev/null
fi
exec .venv/bin/python -m pytest -q "$@"
