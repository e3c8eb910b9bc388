"""gestures predict: the API, the command line, bad files, spread detection and the embedded demo model."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from video_fixtures import make_bad

from gestures_hub.cli import main
from gestures_hub.model import SYNTHETIC_NOTICE as DEMO_NOTICE
from gestures_hub.model import detect_spread
from gestures_hub.model.video_reader import count_snippets
from gestures_hub.predict import DEMO_MODEL_DIR, load_predictor, predict_video
from gestures_hub.synthetic import generate_cohort
from gestures_hub.timeline import plot_timeline

STEP = 8 / 15  # seconds between snippet starts (8 frames at 15 fps)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    return generate_cohort(folder, 1, 4242, fps=15, size=(96, 72), min_duration=8.0, max_duration=12.0,
                           progress=False)


@pytest.fixture(scope="module")
def videos(manifest):
    return sorted((manifest.parent / "videos").glob("*.mp4"))


@pytest.fixture(scope="module")
def ground_truth(manifest):
    """Video file name -> its label in the synthetic cohort's manifest."""
    with manifest.open(newline="") as file:
        return {Path(row["video"]).name: row["label"] for row in csv.DictReader(file)}


@pytest.fixture(scope="module")
def demo():
    return load_predictor()


def test_demo_model_folder_holds_weights_config_and_card_only():
    """No hand-kept copy of the model code: save_pretrained and push write the package's Hub unit."""
    assert sorted(path.name for path in DEMO_MODEL_DIR.iterdir()) == [
        "README.md", "config.json", "model.safetensors", "video_preprocessor_config.json"]
    assert json.loads((DEMO_MODEL_DIR / "config.json").read_text())["trained_on_synthetic_data"] is True
    card = (DEMO_MODEL_DIR / "README.md").read_text()
    assert "synthetic" in card.lower() and "not for clinical use" in card.lower()
    assert sum(path.stat().st_size for path in DEMO_MODEL_DIR.iterdir()) <= 20 * 2**20


def test_demo_model_gives_the_ground_truth_label(demo, videos, ground_truth):
    """Unseen synthetic videos (seed 4242, never used in training): the demo model must name their true class."""
    assert sorted(ground_truth.values()) == ["FOS", "TCS"], ground_truth  # the fixture holds one of each
    for video in videos:
        prediction = predict_video(demo[0], video)
        assert prediction.label == ground_truth[video.name], (video.name, prediction.probabilities)
        assert prediction.probabilities[prediction.label] > 0.9


def test_predict_video_gives_label_probabilities_and_timeline(demo, videos, tmp_path):
    model, description, _ = demo
    assert model.config.trained_on_synthetic_data and "demo" in description
    prediction = predict_video(model, videos[0], description=description)
    assert prediction.label in ("FOS", "TCS")
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    n = len(prediction.times)
    assert abs(n - count_snippets(round(prediction.duration * 15), 8)) <= 1
    np.testing.assert_allclose(prediction.times, np.arange(n) * STEP, atol=1e-4)
    assert prediction.snippet_probabilities.shape == (n, 2)
    np.testing.assert_allclose(prediction.snippet_probabilities.sum(axis=1), 1.0, atol=1e-5)
    data = json.loads(json.dumps(prediction.to_dict()))
    assert data["demo"] is True and data["notice"] == DEMO_NOTICE and len(data["timeline"]) == n
    figure = plot_timeline(prediction, tmp_path / "plot.png")
    assert isinstance(figure, Figure) and (tmp_path / "plot.png").stat().st_size > 0
    marks = "\n".join(text.get_text() for text in figure.texts)
    assert DEMO_NOTICE in marks and "SYNTHETIC VIDEO" in marks and "RANDOM" not in marks


def test_cli_predicts_good_videos_and_names_bad_ones(videos, tmp_path, capsys):
    bad = [make_bad(kind, tmp_path) for kind in ("text", "truncated_mp4", "short")]
    code = main(["predict", str(videos[0]), *map(str, bad), str(videos[1]), "--out", str(tmp_path / "out"),
                 "--json"])
    captured = capsys.readouterr()
    assert code == 1
    for path in bad:
        assert str(path) in captured.err
    report = json.loads(captured.out)
    assert report["demo"] is True and report["notice"] == DEMO_NOTICE
    assert [p["video"] for p in report["predictions"]] == [str(videos[0]), str(videos[1])]
    assert set(report["errors"]) == set(map(str, bad))
    for video in videos[:2]:
        for suffix in ("csv", "json", "png"):
            assert (tmp_path / "out" / f"{video.stem}.{suffix}").stat().st_size > 0
        assert f"# {DEMO_NOTICE}" in (tmp_path / "out" / f"{video.stem}.csv").read_text()
        assert json.loads((tmp_path / "out" / f"{video.stem}.json").read_text())["notice"] == DEMO_NOTICE


def test_cli_says_demo_model_on_every_stdout_line(videos, tmp_path, capsys):
    assert main(["predict", *map(str, videos), "--out", str(tmp_path)]) == 0
    results = [line for line in capsys.readouterr().out.splitlines() if line.startswith(str(videos[0].parent))]
    assert len(results) == len(videos) and all(DEMO_NOTICE in line for line in results)


def test_cli_without_demo_notice_for_other_models(videos, tmp_path, capsys):
    assert main(["predict", str(videos[0]), "--model", "tiny-videomae", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert DEMO_NOTICE not in printed and "RANDOM weights" in printed
    assert "DEMO" not in (tmp_path / f"{videos[0].stem}.csv").read_text()
    summary = json.loads((tmp_path / f"{videos[0].stem}.json").read_text())
    assert summary["random_weights"] is True and summary["synthetic_video"] is True and summary["notice"] is None


def test_the_gestures_demo_preset_is_the_trained_demo_model():
    from safetensors.torch import load_file

    from gestures_hub.presets import load_model

    model, pretrained = load_model("gestures-demo")
    assert pretrained and model.config.trained_on_synthetic_data
    saved = load_file(DEMO_MODEL_DIR / "model.safetensors")
    assert all(torch.equal(value, saved[name]) for name, value in model.state_dict().items() if name in saved)
    layout, random = load_model("gestures-demo", hidden_size=32)  # overrides: the layout, with random weights
    assert not random and not layout.config.trained_on_synthetic_data


@pytest.mark.parametrize(
    ("curve", "expected"),
    [
        ([0.1] * 20, None),  # never above
        ([0.1] * 5 + [0.9] * 3 + [0.1] * 12, None),  # 1.6 s blip, too short
        ([0.1] * 5 + [0.9] * 2 + [0.1] * 3 + [0.8] * 10, 10 * STEP),  # blip ignored, sustained rise found
        ([0.1] * 5 + [0.9] * 6 + [0.2] * 9, 5 * STEP),  # 6 snippets = 3.2 s >= 3 s
        ([0.1] * 18 + [0.7] * 2, 18 * STEP),  # lasts until the end of the video
        ([0.6] * 20, 0.0),
    ],
)
def test_detect_spread(curve, expected):
    times = np.arange(len(curve)) * STEP
    result = detect_spread(times, np.array(curve))
    assert result == (None if expected is None else pytest.approx(expected))


def test_detect_spread_options():
    times = np.arange(10) * 1.0
    curve = np.array([0, 0, 0.7, 0.7, 0.7, 0, 0.95, 0.95, 0.95, 0.95])
    assert detect_spread(times, curve, min_duration=3.0) == 2.0
    assert detect_spread(times, curve, threshold=0.9) == 6.0
    assert detect_spread(times, curve, min_duration=5.0) == 6.0  # reaches the end
    assert detect_spread([], []) is None
