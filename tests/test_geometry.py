"""Frame geometry: the paper's crop-and-pad (5 % of the columns off each side, padded to a square) and centre crop."""

import csv
import json
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from gestures_hub import GesturesConfig, GesturesForVideoClassification
from gestures_hub.extract import extract
from gestures_hub.features import load_features, read_settings
from gestures_hub.model import GesturesVideoProcessor
from gestures_hub.presets import get_config

WIDTH, HEIGHT, SIZE = 320, 180, 112
# Bright 4-pixel stripes (even columns survive 4:2:0 chroma subsampling) on a dark frame.
STRIPES = {"cropped_left": 8, "kept_left": 24, "centre_left": 76, "centre_right": 240, "kept_right": 292,
           "cropped_right": 308}


def marker_frame() -> np.ndarray:
    frame = np.full((HEIGHT, WIDTH, 3), 30, dtype=np.uint8)
    for x in STRIPES.values():
        frame[:, x : x + 4] = 230
    return frame


def expected_column(x: float, first: float, kept: float) -> float:
    """Output column of source column ``x`` when source columns ``[first, first + kept)`` fill ``SIZE`` columns."""
    return (x - first) * SIZE / kept


def bright_columns(rgb: np.ndarray) -> list[float]:
    """Centres of the bright stripes along the middle row of an (H, W, 3) uint8 image."""
    row = rgb[rgb.shape[0] // 2, :, 0].astype(float)
    bright = np.flatnonzero(row > 130)
    runs = np.split(bright, np.flatnonzero(np.diff(bright) > 1) + 1) if len(bright) else []
    return [float(run.mean()) for run in runs]


def as_rgb(pixel_values: torch.Tensor, config: GesturesConfig) -> np.ndarray:
    """The first frame of the first snippet back to uint8 (H, W, 3)."""
    mean, std = torch.tensor(config.image_mean).view(3, 1, 1), torch.tensor(config.image_std).view(3, 1, 1)
    frame = pixel_values[0, 0, :, 0] * std + mean
    return (frame.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def write_marker_video(path, frames: int = 24):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(15), options={"crf": "4", "threads": "1"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for _ in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(marker_frame(), format="rgb24")))
        container.mux(stream.encode(None))
    return path


def config_for(geometry: str) -> GesturesConfig:
    return get_config("gestures-demo", image_size=SIZE, frame_geometry=geometry)


def first_frame(geometry: str, source: str, folder) -> np.ndarray:
    """The processor's first frame of the marker video, from caller-decoded frames or from an H.264 file."""
    config = config_for(geometry)
    video = np.stack([marker_frame()] * 16) if source == "frames" else str(write_marker_video(folder / "m.mp4"))
    return as_rgb(GesturesVideoProcessor(config)(video, video_fps=15)["pixel_values"], config)


@pytest.mark.parametrize("source", ["frames", "file"])
def test_crop_and_pad_keeps_columns_16_to_303_and_pads_top_and_bottom(source, tmp_path):
    rgb = first_frame("crop_and_pad", source, tmp_path)
    kept = WIDTH - 2 * 16  # 5 % of 320 columns off each side: 16..303 stay, 288 columns
    expected = [expected_column(STRIPES[name] + 1.5, 16, kept) for name in STRIPES if not name.startswith("cropped")]
    assert bright_columns(rgb) == pytest.approx(expected, abs=1.0)
    content = round(HEIGHT * SIZE / kept)  # 70 rows of picture, 21 black rows above and below
    pad = (SIZE - content) // 2
    assert rgb[: pad - 1].max() == 0 and rgb[SIZE - pad + 1 :].max() == 0
    assert rgb[pad + 1 : SIZE - pad - 1, :, 0].min() >= 20  # the picture (dark grey, never black) fills the rest


@pytest.mark.parametrize("source", ["frames", "file"])
def test_center_crop_keeps_the_middle_56_percent(source, tmp_path):
    rgb = first_frame("center_crop", source, tmp_path)
    first = (WIDTH - HEIGHT) / 2  # the central 180 of 320 columns (56 %): 70..249
    expected = [expected_column(STRIPES[name] + 1.5, first, HEIGHT) for name in ("centre_left", "centre_right")]
    assert bright_columns(rgb) == pytest.approx(expected, abs=1.0)
    assert rgb.min() >= 20  # no padding


def test_extraction_records_its_geometry_and_the_two_geometries_differ(tmp_path):
    video = write_marker_video(tmp_path / "m.mp4")
    with (tmp_path / "videos.csv").open("w", newline="") as file:
        csv.writer(file).writerows([["video", "patient", "seizure", "label"], ["m.mp4", "p1", "s1", "FOS"]])
    features = {}
    for geometry in ("crop_and_pad", "center_crop"):
        torch.manual_seed(0)
        model = GesturesForVideoClassification(config_for(geometry)).eval()
        model.save_pretrained(tmp_path / geometry)
        extract(tmp_path / "videos.csv", str(tmp_path / geometry), tmp_path / f"features-{geometry}", device="cpu",
                precision="fp32", progress=False)
        assert read_settings(tmp_path / f"features-{geometry}")["geometry"] == geometry
        features[geometry] = np.asarray(load_features(tmp_path / f"features-{geometry}")[0]["features"])
        with torch.no_grad():  # the features are the encoder on the processor's pixels, with this geometry
            pixels = GesturesVideoProcessor(model.config)(str(video))["pixel_values"][0]
            np.testing.assert_allclose(features[geometry], model.gestures.encode_snippets(pixels).numpy(), atol=1e-5)
    assert not np.allclose(features["crop_and_pad"], features["center_crop"], atol=1e-3)
    assert json.loads((tmp_path / "center_crop" / "config.json").read_text())["frame_geometry"] == "center_crop"


def test_paper_presets_use_crop_and_pad_and_bad_values_are_refused():
    assert GesturesConfig().frame_geometry == "crop_and_pad"
    for name in ("gestures-blstm", "gestures-lstm", "gestures-mean", "gestures-blstm-32f"):
        assert get_config(name).frame_geometry == "crop_and_pad"
    assert get_config("gestures-demo").frame_geometry == "center_crop"  # what the demo model was trained on
    with pytest.raises(ValueError, match="frame_geometry must be one of crop_and_pad, center_crop"):
        GesturesConfig(frame_geometry="letterbox")
