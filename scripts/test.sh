#!/usr/bin/env bash
# The README's test command (and all that .ci/run runs): provide what the tests need, then run the suite in the
# project's virtual environment, `.venv` (created with the dev extra when missing, as the README's first command
# does, so that this command alone works on a fresh clone). System packages, with apt-get when missing: Debian's Chromium for
# the Space's browser test (never `playwright install`, which downloads a browser build of its own), a C++
# compiler (g++), which torch.compile needs for the grid's fused LSTM steps and which builds its C++ LSTM kernels
# (without one they run eagerly, slower),
# and FFmpeg (ffmpeg), whose shared libraries torchcodec's decoder loads and whose binary gradio's video input runs.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v g++ >/dev/null || missing+=(g++)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "scripts/test.sh: installing ${missing[*]} with apt-get (needed by the tests)" >&2
    as_root=()
    [ "$(id -u)" -eq 0 ] || as_root=(sudo)
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
    echo "scripts/test.sh: creating .venv with the dev extra (pip install -e '.[dev]')" >&2
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[dev]"
fi
exec .venv/bin/python -m pytest -q "$@"
