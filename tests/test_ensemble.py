"""The fold ensemble: written by `gestures train` and `gestures ensemble`, its probability the mean of its members',
in this process and in a fresh one with remote code only."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from gestures_hub.cli import main
from gestures_hub.ensemble import ENSEMBLE_DIR, build_ensemble, summarize_bank
from gestures_hub.extract import extract
from gestures_hub.model.modeling_gestures import ENSEMBLE_AUTO_MAP
from gestures_hub.predict import DEMO_MODEL_DIR
from gestures_hub.synthetic import generate_cohort
from gestures_hub.timeline import plot_timeline
from gestures_hub.train import TrainingArguments, train
from gestures_hub.training_data import FeatureBank

FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    sys.modules["gestures_hub"] = None  # any import of the package now fails
    import torch
    from transformers import AutoModel, AutoModelForVideoClassification, AutoVideoProcessor, pipeline

    ensemble_dir, video, out_path, *members = sys.argv[1:]
    ensemble = AutoModelForVideoClassification.from_pretrained(ensemble_dir, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(ensemble_dir, trust_remote_code=True)
    folds = [AutoModelForVideoClassification.from_pretrained(m, trust_remote_code=True).eval() for m in members]
    inputs = AutoVideoProcessor.from_pretrained(ensemble_dir, trust_remote_code=True)(video)
    with torch.no_grad():
        out = ensemble(pixel_values=inputs["pixel_values"], attention_mask=inputs["attention_mask"])
        raw = [fold(snippet_features=out.snippet_features).logits for fold in folds]
    timeline = pipeline(model=ensemble_dir, trust_remote_code=True)(video, return_timeline=True)
    json.dump({
        "classes": [type(ensemble).__name__, type(base).__name__, type(folds[0]).__name__],
        "modules": [type(ensemble).__module__, type(folds[0]).__module__],
        "temperature": ensemble.config.temperature,
        "ensemble": out.logits.softmax(-1)[0].tolist(),
        "members": [r.softmax(-1)[0].tolist() for r in raw],
        "raw_members": [r[0].tolist() for r in raw],
        "member_probabilities": out.member_logits.softmax(-1)[0].tolist(),
        "std": out.probability_std[0].tolist(),
        "timeline": timeline,
    }, open(out_path, "w"))
    """
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """`gestures train` on demo-encoder features of 4 synthetic patients (seed 8383), 2 folds, with --encoder."""
    work = tmp_path_factory.mktemp("ensemble")
    manifest = generate_cohort(work / "cohort", 4, 8383, fps=15, size=(96, 72), min_duration=6.0, max_duration=8.0,
                               progress=False)
    extract(manifest, str(DEMO_MODEL_DIR), work / "features", device="cpu", progress=False)
    train(TrainingArguments(features=str(work / "features"), output_dir=str(work / "run"), folds=2, epochs=2,
                            num_segments=4, seed=0, encoder=str(DEMO_MODEL_DIR)))
    return work / "run"


def video_of(run_dir):
    manifest = run_dir.parent / "cohort" / "manifest.csv"
    return manifest.parent / manifest.read_text().splitlines()[1].split(",")[0]


def test_train_writes_the_ensemble_with_the_runs_feature_summary(run_dir):
    config = json.loads((run_dir / ENSEMBLE_DIR / "config.json").read_text())
    assert config["model_type"] == "gestures_ensemble" and config["num_members"] == 2
    assert config["member_sources"] == ["fold-0/best", "fold-1/best"]
    assert config["auto_map"] == ENSEMBLE_AUTO_MAP and config["encoder"] == "r2plus1d_tiny"
    assert config["trained_on_synthetic_data"] is True
    expected = summarize_bank(FeatureBank.load(run_dir.parent / "features"))
    assert config["feature_summary"] == expected  # the run's training features, not the demo model's
    for model in ("fold-0/best", "final-features", "final-video"):  # export() stores it in every model
        assert json.loads((run_dir / model / "config.json").read_text())["feature_summary"] == expected, model
    demo = json.loads((DEMO_MODEL_DIR / "config.json").read_text())["feature_summary"]
    assert expected["mean"] != demo["mean"]
    assert (run_dir / ENSEMBLE_DIR / "cv_metrics.json").is_file()
    assert "`final-ensemble/`" in (run_dir / "README.md").read_text()


def test_ensemble_is_the_mean_of_its_members_in_a_fresh_process(run_dir, tmp_path, capsys):
    out = tmp_path / "calibrated-ensemble"
    assert main(["ensemble", str(run_dir), "--temperature", "1.7", "-o", str(out)]) == 0
    assert "fold ensemble of 2 models" in capsys.readouterr().out
    (tmp_path / "fresh.py").write_text(FRESH_PROCESS)
    members = [str(run_dir / f"fold-{i}" / "best") for i in range(2)]
    result = subprocess.run([sys.executable, str(tmp_path / "fresh.py"), str(out), str(video_of(run_dir)),
                             str(tmp_path / "out.json"), *members], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    fresh = json.loads((tmp_path / "out.json").read_text())
    assert fresh["classes"] == ["GesturesEnsembleForVideoClassification"] * 2 + ["GesturesForVideoClassification"]
    assert not any(module.startswith("gestures_hub") for module in fresh["modules"])
    assert fresh["temperature"] == 1.7
    calibrated = torch.tensor(fresh["raw_members"]).div(1.7).softmax(-1)  # the members' own logits, scaled
    np.testing.assert_allclose(fresh["member_probabilities"], calibrated.numpy(), atol=1e-6)
    np.testing.assert_allclose(fresh["ensemble"], calibrated.mean(0).numpy(), atol=1e-6)
    np.testing.assert_allclose(fresh["std"], calibrated.std(0, correction=0).numpy(), atol=1e-6)
    assert not np.allclose(fresh["members"], calibrated.numpy(), atol=1e-3)  # T=1.7 changed them
    timeline = fresh["timeline"]
    members = np.array([[row[name] for name in ("FOS", "TCS")] for row in timeline["ensemble"]["member_scores"]])
    scores = {item["label"]: item["score"] for item in timeline["scores"]}
    np.testing.assert_allclose([scores["FOS"], scores["TCS"]], members.mean(0), atol=1e-6)
    np.testing.assert_allclose(list(timeline["ensemble"]["std"].values()), members.std(0), atol=1e-6)
    assert timeline["calibrated"] is True and timeline["temperature"] == 1.7
    assert timeline["familiarity"]["available"] is True and isinstance(timeline["unfamiliar"], bool)
    assert len(timeline["ensemble"]["snippet_std"]["TCS"]) == len(timeline["snippet_times"])


def test_predict_with_the_ensemble_reports_members_spread_and_band(run_dir, tmp_path, capsys):
    video = video_of(run_dir)
    assert main(["predict", str(video), "--model", str(run_dir / ENSEMBLE_DIR), "--out", str(tmp_path),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["predictions"][0]
    ensemble = report["ensemble"]
    assert ensemble["num_members"] == 2 and len(ensemble["member_probabilities"]) == 2
    members = np.array([[p["FOS"], p["TCS"]] for p in ensemble["member_probabilities"]])
    np.testing.assert_allclose([report["probabilities"]["FOS"], report["probabilities"]["TCS"]], members.mean(0),
                               atol=1e-6)
    assert ensemble["std"]["TCS"] == pytest.approx(members[:, 1].std(), abs=1e-6)
    assert all("TCS_std" in row for row in report["timeline"])
    header = next(line for line in (tmp_path / f"{video.stem}.csv").read_text().splitlines()
                  if not line.startswith("#"))
    assert header == "start_time_s,p_FOS,p_TCS,sd_FOS,sd_TCS,unusualness,unusual"
    from gestures_hub.predict import load_predictor, predict_video

    model, _, _ = load_predictor(str(run_dir / ENSEMBLE_DIR))
    figure = plot_timeline(predict_video(model, video))
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert "± 1 SD across 2 fold models" in legend


def test_ensemble_refuses_runs_it_cannot_build(run_dir, tmp_path):
    single = tmp_path / "one-fold"
    (single / "fold-0").mkdir(parents=True)
    os.symlink(run_dir / "fold-0" / "best", single / "fold-0" / "best")
    with pytest.raises(ValueError, match=r"has 1 fold model\(s\).*needs at least 2"):
        build_ensemble(single)
    with pytest.raises(ValueError, match="features with feature_dim=128; the encoder 'tiny-videomae' has 32"):
        build_ensemble(run_dir, encoder="tiny-videomae")


def test_the_ensembles_model_card_says_what_it_is_and_that_it_flags_unlike_videos(run_dir):
    from gestures_hub.cards import render_model_card

    card = str(render_model_card(run_dir / ENSEMBLE_DIR, repo_id="org/gestures-ensemble"))
    assert "| Fold ensemble | 2 heads (aggregator + classifier: fold-0/best, fold-1/best) on one encoder pass" in card
    assert "| Unlike the training data | flagged: the config holds a summary of the training snippet features" in card
    assert "synthetic" in card.lower()
