"""``gestures extract`` against an independent reference written out here with PyAV and NumPy: frame rate, frame
geometry and normalisation constants that drift from the paper's fail this test."""

from __future__ import annotations

import csv
from fractions import Fraction

import av
import datasets
import numpy as np
import pytest
import torch

from gestures_hub import GesturesForVideoClassification
from gestures_hub.extract import extract
from gestures_hub.presets import get_config

pytestmark = pytest.mark.usefixtures("one_thread")

# torchvision's Kinetics-400 video models (and the paper's R(2+1)D-34) normalise RGB in [0, 1] with these.
MEAN = np.array([0.43216, 0.394666, 0.37645])
STD = np.array([0.22803, 0.22145, 0.216989])
FPS = 15.0  # the paper's frame rate
SOURCE_FPS, DURATION, WIDTH, HEIGHT = 25, 2.0, 40, 32
TOLERANCE = 1e-5  # float32 rounding of the same arithmetic (channels_last convolutions sum in another order)


def paint(index: int) -> np.ndarray:
    """Frame ``index``: red changes with every frame (so any other frame choice shows), green and blue are ramps
    across and down the frame (so any other crop or pad shows)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.stack([np.full_like(x, 37 * index % 256), 4 * x + 2 * y, 250 - 5 * y], axis=-1).astype(np.uint8)


def write_lossless_video(path) -> None:
    """PNG frames in a QuickTime file: decoding gives back exactly the painted RGB, so no colour conversion or
    chroma interpolation stands between the reference and the reader."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("png", rate=SOURCE_FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "rgb24"
        for index in range(round(DURATION * SOURCE_FPS)):
            frame = av.VideoFrame.from_ndarray(paint(index), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, SOURCE_FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def reference_snippets(path, *, size: int, geometry: str, frames: int, fps: float = FPS, mean=MEAN, std=STD):
    """``(N, 3, frames, size, size)`` float32, computed from the formulas (no resize is needed at these sizes)."""
    with av.open(str(path)) as container:
        decoded = [(float(frame.time), frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]
    times = np.array([time for time, _ in decoded])
    # sample-and-hold: output frame k (at k / fps s) shows the last source frame shown at k / fps (1 ms slack)
    count = int(np.ceil(DURATION * fps - 1e-9))
    chosen = [decoded[np.searchsorted(times, k / fps + 1e-3, side="right") - 1][1] for k in range(count)]
    if geometry == "center_crop":  # shorter side (height) is already `size`: keep the central `size` columns
        assert size == HEIGHT
        left = (WIDTH - size) // 2
        squares = [rgb[:, left:left + size] for rgb in chosen]
    else:  # crop_and_pad: cut 5 % of the columns from each side; the rest is `size` wide; pad the rows with black
        cut = round(0.05 * WIDTH)
        assert WIDTH - 2 * cut == size and size >= HEIGHT
        top = (size - HEIGHT) // 2
        squares = [np.pad(rgb[:, cut:WIDTH - cut], ((top, size - HEIGHT - top), (0, 0), (0, 0))) for rgb in chosen]
    video = (np.stack(squares).astype(np.float64) / 255 - mean) / std  # (T, H, W, 3)
    snippets = [video[start:start + frames] for start in range(0, len(video) - frames + 1, frames)]
    return torch.from_numpy(np.stack(snippets).transpose(0, 4, 1, 2, 3).astype(np.float32))  # (N, 3, T, H, W)


@pytest.mark.parametrize(("geometry", "size"), [("center_crop", HEIGHT), ("crop_and_pad", WIDTH - 4)])
def test_extracted_features_match_an_independent_reference(tmp_path, geometry, size):
    write_lossless_video(tmp_path / "v.mov")
    with (tmp_path / "manifest.csv").open("w", newline="") as file:
        csv.writer(file).writerows([["video", "patient", "seizure", "label"], ["v.mov", "p1", "s1", "TCS"]])
    torch.manual_seed(0)
    model = GesturesForVideoClassification(get_config("gestures-demo", image_size=size, frame_geometry=geometry))
    model.save_pretrained(tmp_path / "model")
    config = model.eval().config
    assert (config.fps, config.frames_per_snippet, config.image_size, config.frame_geometry) == (FPS, 8, size, geometry)

    extract(tmp_path / "manifest.csv", tmp_path / "model", tmp_path / "out", precision="fp32", progress=False)
    extracted = np.asarray(datasets.load_dataset(str(tmp_path / "out"), split="train")["features"][0])

    def encode(**options) -> np.ndarray:
        snippets = reference_snippets(tmp_path / "v.mov", size=size, geometry=geometry, frames=8, **options)
        with torch.no_grad():
            return model.gestures.encode_snippets(snippets).numpy()

    expected = encode()
    assert expected.shape == (3, 128)  # 30 frames at 15 fps in 2 s: three 8-frame snippets
    np.testing.assert_allclose(extracted, expected, atol=TOLERANCE, rtol=TOLERANCE)
    # The comparison can fail: references with the paper's constants swapped, or at the source's frame rate, differ
    # from the extracted features by far more than the tolerance.
    for wrong in (encode(mean=STD, std=MEAN), encode(fps=SOURCE_FPS)[:3]):
        assert np.abs(wrong - extracted).max() > 1000 * TOLERANCE


def test_predict_and_the_pipeline_give_the_model_on_independently_decoded_frames(tmp_path):
    """``predict_video`` (the pipeline the Space and ``gestures predict`` run) equals a direct ``model(...)`` call on
    the reference snippets, to float32 rounding: a wrong frame choice, crop or normalisation would move it far more."""
    from gestures_hub.predict import predict_video

    video = tmp_path / "lossless.mov"
    write_lossless_video(video)
    torch.manual_seed(0)
    model = GesturesForVideoClassification(get_config("gestures-demo", image_size=HEIGHT)).eval()
    pixels = torch.as_tensor(reference_snippets(video, size=HEIGHT, geometry="center_crop", frames=8))
    with torch.no_grad():
        direct = model(pixel_values=pixels[None])
    prediction = predict_video(model, video)
    np.testing.assert_allclose(list(prediction.probabilities.values()), direct.logits[0].softmax(-1).numpy(),
                               atol=TOLERANCE)
    np.testing.assert_allclose(prediction.snippet_probabilities, direct.snippet_logits[0].softmax(-1).numpy(),
                               atol=TOLERANCE)
