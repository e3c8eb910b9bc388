"""'Unlike the training data': the feature summary, its thresholds, and the demo model on fresh synthetic videos and
on videos made differently."""

import json

import numpy as np
import pytest

from gestures_hub.model import GesturesConfig, GesturesForVideoClassification
from gestures_hub.model.familiarity import NOT_AVAILABLE, SNIPPET_QUANTILE, FeatureSummary, summarize_features
from gestures_hub.predict import DEMO_MODEL_DIR, predict_video, summary_line, video_pipeline, write_outputs
from gestures_hub.sample_videos import UNLIKE_PATTERNS, write_test_video
from gestures_hub.synthetic import generate_cohort
from gestures_hub.timeline import plot_timeline

FRESH_SEED = 6262  # never used to train the demo model (its cohort is seed 1000)


def gaussian_videos(rng, num_videos, length=30, dim=12, shift=0.0):
    """Videos of correlated Gaussian 'features' (a fixed mixing), each of one patient."""
    mixing = np.random.default_rng(99).normal(size=(dim, dim)) * 0.3
    features = rng.normal(size=(num_videos * length, dim)) @ mixing + 5.0 + shift
    return features, np.full(num_videos, length), np.arange(num_videos)


def test_thresholds_are_held_out_quantiles_and_survive_the_config():
    rng = np.random.default_rng(0)
    summary = summarize_features(*gaussian_videos(rng, 40), num_components=4)
    fresh, _, _ = gaussian_videos(rng, 40)
    beyond = np.mean(summary.scores(fresh) > summary.snippet_threshold)
    assert beyond == pytest.approx(1 - SNIPPET_QUANTILE, abs=0.03)  # a quantile of unseen draws
    assert summary.num_videos == 40 and summary.num_snippets == 1200 and 0.25 <= summary.video_threshold <= 1
    shifted, _, _ = gaussian_videos(rng, 5, shift=3.0)
    assert summary.assess(shifted).unfamiliar and not summary.assess(fresh[:30]).unfamiliar
    again = FeatureSummary.from_dict(json.loads(json.dumps(summary.to_dict())), feature_dim=12)
    np.testing.assert_allclose(again.scores(fresh), summary.scores(fresh), rtol=1e-12)
    config = GesturesConfig(encoder="none", feature_dim=12, feature_summary=summary.to_dict())
    assert GesturesConfig.from_dict(config.to_dict()).feature_summary == summary.to_dict()


def test_broken_summaries_are_named():
    good = summarize_features(*gaussian_videos(np.random.default_rng(1), 6), num_components=3).to_dict()
    with pytest.raises(ValueError, match="feature_summary lacks snippet_threshold, video_threshold"):
        GesturesConfig(encoder="none", feature_dim=12, feature_summary={**good, "snippet_threshold": None,
                                                                         "video_threshold": None})
    with pytest.raises(ValueError, match="12-d mean but the model has feature_dim=16"):
        GesturesConfig(encoder="none", feature_dim=16, feature_summary=good)
    with pytest.raises(ValueError, match="videos of at least 2 patients"):
        summarize_features(np.zeros((10, 3)), np.array([5, 5]), np.array(["p1", "p1"]))


@pytest.fixture(scope="module")
def pipe():
    return video_pipeline(GesturesForVideoClassification.from_pretrained(DEMO_MODEL_DIR).eval(), device="cpu")


def test_demo_model_flags_unlike_videos_and_not_fresh_synthetic_ones(pipe, tmp_path):
    manifest = generate_cohort(tmp_path / "cohort", 10, FRESH_SEED, fps=15, size=(96, 72), min_duration=6.0,
                               max_duration=8.0, progress=False)
    synthetic = sorted((manifest.parent / "videos").glob("*.mp4"))
    unlike = [write_test_video(tmp_path / f"{pattern}-{seed}.mp4", duration=4.5, fps=15, size=(96, 72), crf=23,
                               pattern=pattern, seed=seed) for seed in range(10) for pattern in UNLIKE_PATTERNS]
    results = {name: [pipe(str(path), return_timeline=True)["familiarity"] for path in paths]
               for name, paths in (("synthetic", synthetic), ("unlike", unlike))}
    threshold = results["synthetic"][0]["video_threshold"]
    fractions = {name: sorted(r["unusual_fraction"] for r in values) for name, values in results.items()}
    print(f"video threshold {threshold:.3f}; unusual fractions: synthetic {fractions['synthetic']}, "
          f"unlike {fractions['unlike']}")
    assert len(synthetic) == 20 and len(unlike) == 40
    assert np.mean([r["unfamiliar"] for r in results["synthetic"]]) <= 0.05
    assert np.mean([r["unfamiliar"] for r in results["unlike"]]) >= 0.95


def test_unlike_video_is_said_in_json_csv_text_and_figure(pipe, tmp_path):
    video = write_test_video(tmp_path / "shapes.mp4", duration=5.0, fps=15, size=(96, 72), pattern="shapes", seed=7)
    prediction = predict_video(pipe, video)
    assert prediction.unfamiliar is True and prediction.unusual.all()
    data = prediction.to_dict()
    assert data["unfamiliar"] is True and data["familiarity"]["unusual_fraction"] == 1.0
    assert all(row["unusual"] and row["unusualness"] > data["familiarity"]["snippet_threshold"]
               for row in data["timeline"])
    assert "UNLIKE THE TRAINING DATA (100% of snippets unusual" in summary_line(prediction)
    paths = write_outputs(prediction, tmp_path / "out", "shapes")
    lines = paths["csv"].read_text().splitlines()
    assert any(line.startswith("# UNLIKE THE TRAINING DATA") for line in lines)
    assert "start_time_s,p_FOS,p_TCS,unusualness,unusual" in lines
    figure = plot_timeline(prediction)
    assert any("UNLIKE THE TRAINING DATA: 100% of snippets unusual" in text.get_text() for text in figure.texts)
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert "unusual snippet (unlike the training data)" in legend


def test_a_model_without_summary_reports_not_available(tmp_path):
    model = GesturesForVideoClassification.from_pretrained(DEMO_MODEL_DIR).eval()
    model.config.feature_summary = None
    model.save_pretrained(tmp_path / "old")
    assert "feature_summary" not in json.loads((tmp_path / "old" / "config.json").read_text()) or json.loads(
        (tmp_path / "old" / "config.json").read_text())["feature_summary"] is None
    video = write_test_video(tmp_path / "shapes.mp4", duration=5.0, fps=15, size=(96, 72), pattern="shapes", seed=7)
    timeline = video_pipeline(GesturesForVideoClassification.from_pretrained(tmp_path / "old"))(
        str(video), return_timeline=True)
    assert timeline["unfamiliar"] is None and timeline["snippet_unusualness"] is None
    assert timeline["familiarity"] == {"available": False, "note": NOT_AVAILABLE}
    prediction = predict_video(model, video)
    assert prediction.to_dict()["familiarity"]["available"] is False and prediction.unusual is None
    assert "check not available" in summary_line(prediction)
    assert not any("UNLIKE" in text.get_text() for text in plot_timeline(prediction).texts)
