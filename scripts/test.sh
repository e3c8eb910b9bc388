#!/usr/bin/env bash
# The README's test command (and what .ci/run runs): provide what the tests need beyond the Python packages, then run
# the suite in the project's virtual environment. System packages, with apt-get when missing: Debian's Chromium for
# the Space's browser test (never `playwright install`, which downloads a browser build of its own), a C++
# compiler (g++), which torch.compile needs for the grid's fused LSTM steps (without one they run eagerly, slower),
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
exec .venv/bin/python -m pytest -q "$@"
