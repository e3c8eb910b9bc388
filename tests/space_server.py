"""One Space server for the Space tests: ``python app.py`` in a subprocess on 127.0.0.1, started once per run."""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

SPACE = Path(__file__).resolve().parents[1] / "space"
MAX_MB = 1.0
"""Upload limit given to the test server: the synthetic test videos are smaller, the "oversized" one larger."""
MAX_MINUTES = 0.3
"""Duration limit given to the test server (18 s): longer than the examples and the test videos."""
START_TIMEOUT = 180.0


@dataclass(frozen=True)
class SpaceServer:
    """A running Space: its URL, scratch folder, log and process."""

    url: str
    tmp: Path
    log: Path
    process: subprocess.Popen

    @property
    def cache(self) -> Path:
        """gradio's upload cache."""
        return self.tmp / "gradio"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Space exited with code {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "config", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the Space did not start within {START_TIMEOUT:.0f} s:\n{log.read_text()}")


def start_space(log: Path, scratch: Path | None, **settings: str) -> SpaceServer:
    """Start ``python app.py`` from ``space/`` (demo model, low limits, ``settings`` added to its environment) and
    wait until it serves. ``scratch``: its ``GESTURES_SPACE_TMP``; None: the server picks its own, read from its
    log. Writes the server's output to ``log``."""
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SPACE.parent), os.environ.get("PYTHONPATH")])),  # this checkout
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "GESTURES_MAX_MB": str(MAX_MB),
        "GESTURES_MAX_MINUTES": str(MAX_MINUTES),
        **settings,
    }
    for name in ("GRADIO_TEMP_DIR", "GESTURES_MODEL", "GESTURES_SPACE_TMP"):
        env.pop(name, None)
    if scratch is not None:
        env["GESTURES_SPACE_TMP"] = str(scratch)
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=SPACE, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait(url, process, log)
    except RuntimeError:
        process.kill()
        raise
    if scratch is None:
        scratch = Path(re.search(r"scratch folder: (\S+)", log.read_text()).group(1))
    return SpaceServer(url, scratch, log, process)


@functools.cache
def space_server() -> SpaceServer:
    """The Space shared by the tests that do not stop it, started once per run (stopped at exit)."""
    tmp = Path(tempfile.mkdtemp(prefix="gestures-space-test-"))
    server = start_space(tmp / "server.log", tmp)
    atexit.register(_stop, server)
    return server


def _stop(server: SpaceServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
    shutil.rmtree(server.tmp, ignore_errors=True)
