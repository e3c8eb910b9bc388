"""One Space server for the Space tests: ``python app.py`` in a subprocess on 127.0.0.1, started once per run."""

from __future__ import annotations

import atexit
import functools
import os
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
    """A running Space: its URL and scratch folders."""

    url: str
    tmp: Path
    log: Path

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


@functools.cache
def space_server() -> SpaceServer:
    """Start ``python app.py`` from ``space/`` (demo model, low limits) and wait until it serves."""
    tmp = Path(tempfile.mkdtemp(prefix="gestures-space-test-"))
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SPACE.parent), os.environ.get("PYTHONPATH")])),  # this checkout
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "GESTURES_SPACE_TMP": str(tmp),
        "GESTURES_MAX_MB": str(MAX_MB),
        "GESTURES_MAX_MINUTES": str(MAX_MINUTES),
    }
    env.pop("GRADIO_TEMP_DIR", None)
    env.pop("GESTURES_MODEL", None)
    log = tmp / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=SPACE, env=env, stdout=out, stderr=subprocess.STDOUT)
    atexit.register(_stop, process, tmp)
    url = f"http://127.0.0.1:{port}/"
    _wait(url, process, log)
    return SpaceServer(url, tmp, log)


def _stop(process: subprocess.Popen, tmp: Path) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    shutil.rmtree(tmp, ignore_errors=True)
