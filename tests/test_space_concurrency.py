"""The Space under concurrent users and signals: identical uploads never break each other, refused requests and
stopped servers leave no upload behind, and each server has a scratch folder of its own."""

from __future__ import annotations

import json
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.utils import QueueError, Status
from space_server import SpaceServer, space_server, start_space

from gestures_hub.sample_videos import write_test_video

pytestmark = pytest.mark.slow

MAX_WAITING = 4
"""Queue size of the server that takes 20 concurrent requests: small, so that some are surely refused."""
BUSY = "Queue is full! Please try again."
"""What gradio_client raises (as ``QueueError``) for a request refused by a full queue; the browser shows "This
application is currently busy. Please try again." Both are fixed by gradio's clients, not by the server."""
STOP_LIMIT = 30.0
RUNNING = {Status.PROCESSING, Status.PROGRESS}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SpaceServer]]:
    """Three servers started in parallel: "busy" (small queue) and "own" without ``GESTURES_SPACE_TMP``, "given"
    with one."""
    logs = tmp_path_factory.mktemp("space-logs")
    given = tmp_path_factory.mktemp("space-given")
    settings = {"busy": (None, {"GESTURES_MAX_WAITING": str(MAX_WAITING)}), "own": (None, {}), "given": (given, {})}
    with ThreadPoolExecutor(len(settings)) as pool:
        futures = {name: pool.submit(start_space, logs / f"{name}.log", scratch, **env)
                   for name, (scratch, env) in settings.items()}
    started = {name: future.result() for name, future in futures.items() if future.exception() is None}
    try:
        assert len(started) == len(settings), [str(f.exception()) for f in futures.values() if f.exception()]
        yield started
    finally:
        for server in started.values():
            server.process.kill()
            server.process.wait()
            if server.tmp != given:
                shutil.rmtree(server.tmp, ignore_errors=True)


def videos_named(folder: Path, names: set[str]) -> list[Path]:
    """Files under ``folder`` with one of ``names`` (the test's uploads, wherever gradio or the app put them)."""
    return sorted(path for path in folder.rglob("*") if path.is_file() and path.name in names)


def private_files(server: SpaceServer) -> list[Path]:
    """Files in the app's private upload folder."""
    return sorted(path for path in server.cache.glob("private-*/**/*") if path.is_file())


def outcome(client: Client, video: Path) -> str:
    """The label of one request, or the message of a refusal (any other error fails the test)."""
    try:
        label, _, _ = client.predict(handle_file(str(video)), api_name="/analyse")
    except QueueError as error:
        return str(error)
    return label["label"]


def stop(server: SpaceServer, signum: int) -> float:
    """Send ``signum`` and return how long the server took to exit (it must exit with 0)."""
    start = time.monotonic()
    server.process.send_signal(signum)
    assert server.process.wait(timeout=STOP_LIMIT + 5) == 0
    return time.monotonic() - start


def signal_while_busy(server: SpaceServer, signum: int, videos: list[Path]) -> float:
    """Submit ``videos``, send ``signum`` once the first is being analysed (the others wait); returns the time the
    server took to stop."""
    client = Client(server.url, verbose=False, download_files=False)
    jobs = [client.submit(handle_file(str(video)), api_name="/analyse") for video in videos]
    deadline = time.monotonic() + 30
    while not RUNNING & {job.status().code for job in jobs} and time.monotonic() < deadline:
        time.sleep(0.02)
    codes = [job.status().code for job in jobs]
    assert RUNNING & set(codes) and codes.count(Status.FINISHED) < len(codes) - 1, codes  # one runs, others wait
    assert private_files(server), "the uploads are on the server"
    return stop(server, signum)


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Six distinct 15 s videos (about half a second of analysis each, one at a time): when the server is stopped,
    it is analysing the first and the others wait."""
    folder = tmp_path_factory.mktemp("long")
    return [write_test_video(folder / f"long_{seed}.mp4", duration=15.0, fps=15, pattern="noise", seed=seed)
            for seed in range(6)]


def test_servers_without_a_scratch_setting_get_private_folders_of_their_own(servers: dict[str, SpaceServer]) -> None:
    own, busy = servers["own"].tmp, servers["busy"].tmp
    assert own != busy
    for folder in (own, busy):
        assert folder.parent == Path(tempfile.gettempdir()).resolve() and folder.name.startswith("gestures-space-")
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, "only the server's user may read its uploads"
        assert sorted(p.name for p in (folder / "examples").iterdir()) == [
            "synthetic_FOS_syn2024p001_01.mp4", "synthetic_TCS_syn2024p002_01.mp4"]


def test_20_identical_and_20_distinct_concurrent_requests_are_answered_and_leave_nothing(
    servers: dict[str, SpaceServer], tmp_path: Path
) -> None:
    server = servers["busy"]
    same = write_test_video(tmp_path / "same.mp4", duration=1.0, fps=15, pattern="noise", seed=100)
    distinct = [write_test_video(tmp_path / f"distinct_{i}.mp4", duration=1.0, fps=15, pattern="noise", seed=i)
                for i in range(20)]
    assert len({video.read_bytes() for video in distinct}) == 20
    names = {same.name} | {video.name for video in distinct}
    client = Client(server.url, verbose=False, download_files=False)
    for batch in ([same] * 20, distinct):
        with ThreadPoolExecutor(len(batch)) as pool:
            outcomes = list(pool.map(lambda video: outcome(client, video), batch))
        assert set(outcomes) <= {"FOS", "TCS", BUSY}, outcomes
        assert outcomes.count(BUSY) >= 1 and len(outcomes) - outcomes.count(BUSY) >= 2, outcomes
        # refused or answered, nothing uploaded stays: not gradio's content-hash copy, not the app's private one
        assert videos_named(server.tmp, names) == [] and private_files(server) == []
    log = server.log.read_text()
    assert "Traceback" not in log and "FileNotFoundError" not in log
    assert stop(server, signal.SIGTERM) < STOP_LIMIT
    assert not server.tmp.exists(), "the server's own scratch folder is removed when it stops"


def test_sigterm_with_requests_waiting_removes_every_upload_from_a_given_scratch_folder(
    servers: dict[str, SpaceServer], long_videos: list[Path]
) -> None:
    server = servers["given"]
    assert signal_while_busy(server, signal.SIGTERM, long_videos) < STOP_LIMIT
    assert server.tmp.is_dir() and list(server.tmp.iterdir()) == [], "a given scratch folder is emptied, not removed"
    assert "stopped" in server.log.read_text().splitlines()[-1]


def test_sigint_with_requests_waiting_stops_within_30_s_and_leaves_nothing(
    servers: dict[str, SpaceServer], long_videos: list[Path]
) -> None:
    server = servers["own"]
    assert signal_while_busy(server, signal.SIGINT, long_videos) < STOP_LIMIT
    assert not server.tmp.exists()
    assert "stopped" in server.log.read_text().splitlines()[-1]


def upload(server: SpaceServer, video: Path) -> str:
    """Upload ``video`` as the browser does; returns the path the server gives it."""
    with video.open("rb") as file:
        response = httpx.post(f"{server.url}gradio_api/upload", files=[("files", (video.name, file))])
    response.raise_for_status()
    [path] = response.json()
    return path


def analyse_uploaded(server: SpaceServer, path: str) -> tuple[str, str]:
    """Call ``/analyse`` on a path already on the server (the HTTP API); returns the final event and its data."""
    data = {"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}]}
    response = httpx.post(f"{server.url}gradio_api/call/analyse", json=data)
    response.raise_for_status()
    stream = httpx.get(f"{server.url}gradio_api/call/analyse/{response.json()['event_id']}", timeout=60).text
    events = [line.removeprefix("event: ") for line in stream.splitlines() if line.startswith("event: ")]
    datas = [line.removeprefix("data: ") for line in stream.splitlines() if line.startswith("data: ")]
    return events[-1], datas[-1]


def test_identical_uploads_get_paths_of_their_own_and_a_used_one_is_refused_clearly(tmp_path: Path) -> None:
    server = space_server()
    video = write_test_video(tmp_path / "twice.mp4", duration=1.0, fps=15, pattern="noise", seed=200)
    first, second = upload(server, video), upload(server, video)
    assert first != second and Path(first).name == Path(second).name == video.name
    assert Path(first).read_bytes() == Path(second).read_bytes() == video.read_bytes()
    assert videos_named(server.tmp, {video.name}) == sorted([Path(first), Path(second)]), \
        "gradio's shared content-hash path must be gone: each upload holds its own"
    event, data = analyse_uploaded(server, first)
    assert event == "complete" and json.loads(data)[0]["label"] in ("FOS", "TCS")
    assert not Path(first).exists() and Path(second).exists(), "a request deletes its own upload only"
    event, data = analyse_uploaded(server, first)
    assert event == "error" and "no longer on the server" in data and "Upload it again" in data
    assert analyse_uploaded(server, second)[0] == "complete"
    assert videos_named(server.tmp, {video.name}) == []
