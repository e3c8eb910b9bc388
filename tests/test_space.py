"""The Gradio Space, served by ``python app.py`` and called with ``gradio_client`` like any API user would."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from space_server import MAX_MB, MAX_MINUTES, SpaceServer, space_server

from gestures_hub.synthetic import SeizureSpec
from gestures_hub.synthetic_render import render_video

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> SpaceServer:
    return space_server()


@pytest.fixture(scope="module")
def client(server: SpaceServer) -> Client:
    return Client(server.url, verbose=False, download_files=False)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short synthetic TCS video with a name no other test uses."""
    spec = SeizureSpec(patient="spacetest", seizure="01", label="TCS", duration=8.0, fps=15, width=160, height=120,
                       seed=3)
    return render_video(spec, tmp_path_factory.mktemp("space") / "space_upload_unique.mp4")


def _cached(server: SpaceServer, name: str) -> list[Path]:
    return list(server.cache.rglob(name))


def test_analyse_returns_label_timeline_and_deletes_the_upload(server: SpaceServer, client: Client,
                                                               video: Path) -> None:
    label, plot, details = client.predict(handle_file(str(video)), api_name="/analyse")
    confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert label["label"] in ("FOS", "TCS") and set(confidences) == {"FOS", "TCS"}
    assert sum(confidences.values()) == pytest.approx(1.0, abs=1e-3)
    assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image/")
    assert f"Prediction: {label['label']}" in details and "snippets" in details
    assert "DEMO model" in details and "synthetic" in details
    assert "UNLIKE THE TRAINING DATA" not in details  # a video of the kind the demo model was trained on
    assert not _cached(server, video.name), "the upload must be deleted after the request"


def test_oversized_long_and_corrupt_uploads_get_clear_errors_and_the_app_keeps_serving(
    server: SpaceServer, client: Client, video: Path, tmp_path: Path
) -> None:
    big = tmp_path / "space_big.mp4"
    big.write_bytes(os.urandom(int(1.5 * MAX_MB * 1e6)))
    with pytest.raises(AppError, match=f"accepts videos up to {MAX_MB:g} MB") as too_big:
        client.predict(handle_file(str(big)), api_name="/analyse")
    assert too_big.value.title == "Video too large"  # the app's own title, not a bare "Error"
    spec = SeizureSpec(patient="spacetest", seizure="02", label="FOS", duration=MAX_MINUTES * 60 + 2, fps=5,
                       width=160, height=120)
    long = render_video(spec, tmp_path / "space_long.mp4")
    with pytest.raises(AppError, match=f"accepts videos up to {MAX_MINUTES:g} min"):
        client.predict(handle_file(str(long)), api_name="/analyse")
    corrupt = tmp_path / "space_corrupt.mp4"
    corrupt.write_bytes(b"not a video" * 100)
    with pytest.raises(AppError, match="not a video") as error:
        client.predict(handle_file(str(corrupt)), api_name="/analyse")
    assert str(server.tmp) not in str(error.value), "errors must not reveal server paths"
    assert error.value.title == "Cannot read this video"
    assert not any(_cached(server, p.name) for p in (big, long, corrupt))
    label, _, _ = client.predict(handle_file(str(video)), api_name="/analyse")
    assert label["label"] == "TCS"  # a synthetic TCS video the demo model never saw
    log = server.log.read_text()
    for title in ("Video too large", "Video too long", "Cannot read this video"):
        assert f"user error: {title}: " in log  # one line each in the server's log ...
    assert "Traceback" not in log  # ... and no traceback for mistakes users make


def test_examples_are_kept_and_served(server: SpaceServer, client: Client) -> None:
    examples = sorted((server.tmp / "examples").glob("synthetic_*.mp4"))
    assert [p.name.split("_")[1] for p in examples] == ["FOS", "TCS"]
    for example, truth in zip(examples, ("FOS", "TCS"), strict=True):  # the demo model names each one's true class
        label, _, details = client.predict(handle_file(str(example)), api_name="/analyse")
        assert label["label"] == truth and f"Prediction: {truth}" in details
        assert f"Ground truth of this synthetic example: **{truth}**" in details
        assert "GESTURES demo model (compact R(2+1)D encoder, BLSTM aggregator" in details
    assert _cached(server, examples[0].name), "an example's cached copy must survive its request"


def test_a_video_unlike_the_training_data_is_flagged_on_the_result(server: SpaceServer, client: Client,
                                                                   tmp_path: Path) -> None:
    from gestures_hub.sample_videos import write_test_video

    video = write_test_video(tmp_path / "space_unlike_shapes.mp4", duration=4.5, fps=15, size=(96, 72), crf=23,
                             pattern="shapes", seed=1)
    _, _, details = client.predict(handle_file(str(video)), api_name="/analyse")
    assert "UNLIKE THE TRAINING DATA" in details and "has not seen videos like this one" in details
    assert "calibrated" not in details  # the demo model has no temperature
    assert not _cached(server, video.name)
