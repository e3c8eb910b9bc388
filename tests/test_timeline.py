"""The timeline plot shows what a reader needs: truth when known, labelled lines, a legend clear of the curve, marks."""

from pathlib import Path

import numpy as np

from gestures_hub.model import SYNTHETIC_NOTICE
from gestures_hub.predict import Prediction
from gestures_hub.timeline import plot_timeline

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def prediction(**overrides) -> Prediction:
    times = np.arange(40) * 8 / 15
    tcs = np.where(times >= 9.0, 0.9, 0.1)
    fields = dict(video="videos/syn_p01_01_L.mp4", label="TCS", probabilities={"FOS": 0.1, "TCS": 0.9}, times=times,
                  snippet_probabilities=np.stack([1 - tcs, tcs], axis=1), spread_time=9.07, duration=21.5,
                  model="demo", notice=SYNTHETIC_NOTICE, synthetic_video=True, true_label="TCS", true_onset=8.7)
    return Prediction(**{**fields, **overrides})


def test_the_figure_shows_truth_lines_legend_beside_the_curve_and_marks(tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    figure = plot_timeline(prediction(), ARTIFACTS / "timeline.png")  # kept for people to look at
    assert (ARTIFACTS / "timeline.png").stat().st_size > 10_000
    axes = figure.axes[0]
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert legend == ["P(TCS) per snippet", "spread threshold (0.5)", "detected spread 9.1 s", "true spread 8.7 s"]
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    legend_box, axes_box = axes.get_legend().get_window_extent(renderer), axes.get_window_extent(renderer)
    assert legend_box.x0 >= axes_box.x1  # beside the axes: never over the curve
    assert axes.get_title().endswith("; truth: TCS")
    marks = "\n".join(text.get_text() for text in figure.texts)
    assert SYNTHETIC_NOTICE in marks and "SYNTHETIC VIDEO" in marks and "RANDOM" not in marks


def test_random_weights_and_real_footage_are_marked_differently():
    figure = plot_timeline(prediction(notice=None, synthetic_video=False, random_weights=True, true_label=None,
                                      true_onset=None))
    marks = "\n".join(text.get_text() for text in figure.texts)
    assert "RANDOM WEIGHTS" in marks and "SYNTHETIC" not in marks
    assert [text.get_text() for text in figure.axes[0].get_legend().get_texts()][-1] == "detected spread 9.1 s"
    assert "truth" not in figure.axes[0].get_title()
    clean = plot_timeline(prediction(notice=None, synthetic_video=False, true_label=None, true_onset=None))
    assert not clean.texts
