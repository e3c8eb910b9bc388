"""gestures quickstart end to end, reduced: a tiny synthetic cohort, 2 folds, a few epochs."""

import csv
import json

from gestures_hub.cards import render_model_card
from gestures_hub.cli import main
from gestures_hub.model import SYNTHETIC_NOTICE as DEMO_NOTICE


def test_quickstart_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "qs"
    code = main(["quickstart", "--out", str(out), "--patients", "5", "--folds", "2", "--epochs", "2",
                 "--max-duration", "12"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "SYNTHETIC" in printed and DEMO_NOTICE in printed
    assert (out / "training" / "metrics.md").is_file()
    model_dir = out / "training" / "final-video"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["trained_on_synthetic_data"] is True and (model_dir / "model.safetensors").is_file()
    assert (model_dir / "video_preprocessor_config.json").is_file()
    final_features = json.loads((out / "training" / "final-features" / "config.json").read_text())
    assert final_features["trained_on_synthetic_data"] is True and final_features["encoder"] == "none"
    predictions = list((out / "prediction").glob("*.json"))
    assert len(predictions) == 1 and (out / "prediction" / f"{predictions[0].stem}.png").is_file()
    prediction = json.loads(predictions[0].read_text())
    assert prediction["demo"] is True and prediction["label"] in ("FOS", "TCS")
    held_out = prediction["video"]
    assert held_out.split("/")[-1].startswith("syn2024p005")
    assert "syn2024p005" not in (out / "cohort" / "train_manifest.csv").read_text()
    with (out / "cohort" / "manifest.csv").open(newline="") as file:
        truth = next(row for row in csv.DictReader(file) if row["video"] == f"videos/{held_out.split('/')[-1]}")
    label, onset = truth["label"], truth["onset_bilateral"]
    assert prediction["label"] == label  # the quickstart model names the held-out patient's true class
    assert f"ground truth (synthetic): {label}{f', spread at {float(onset):.1f} s' if onset else ''}" in printed
    args = json.loads((out / "training" / "training_args.json").read_text())
    assert (args["timeline_weight"], args["metric_for_best_model"]) == (0.5, "loss")
    metrics = json.loads((out / "training" / "metrics.json").read_text())
    assert metrics["timeline"]["num_tcs"] + metrics["timeline"]["num_fos"] == metrics["dataset"]["num_videos"]
    assert "Spread error (s, median)" in (out / "training" / "metrics.md").read_text()
    assert json.loads((model_dir / "cv_metrics.json").read_text()) == metrics  # ready for `gestures push`
    card = render_model_card(model_dir, repo_id="org/gestures-quickstart-synthetic").text
    assert "the checkpoint with the best validation loss (the lowest) is kept" in card
    assert f"**Timeline** (all snippets, pooled over folds): a bilateral spread was detected in " \
           f"{metrics['timeline']['num_detected']} of\nthe {metrics['timeline']['num_tcs']} TCS videos" in card
    assert "They were trained to show when a TCS seizure becomes bilateral" in card
    for line in ("cohort", "features", "metrics", "model", "timeline", "plot"):
        assert f"  {line}" in printed
    assert printed.count("(step ") == 6 and "(step 6:" in printed  # each step says how long it took
    readme = (out / "training" / "README.md").read_text()
    assert "`final-video/`" in readme and "takes snippet features" in readme and "SYNTHETIC" in readme

    # The same command again resumes (nothing retrained, same prediction); --force starts over.
    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert main(["quickstart", "--out", str(out), "--patients", "5", "--folds", "2", "--epochs", "2",
                 "--max-duration", "12"]) == 0
    again = capsys.readouterr().out
    assert "reusing the synthetic cohort of an earlier run" in again and "Extracted 0 video(s)" in again
    assert json.loads(predictions[0].read_text())["probabilities"] == prediction["probabilities"]
    (out / "marker").touch()
    assert main(["quickstart", "--out", str(out), "--patients", "5", "--folds", "2", "--epochs", "2",
                 "--max-duration", "12", "--force"]) == 0
    assert "rendering 5 synthetic patients" in capsys.readouterr().out and not (out / "marker").exists()
    assert (model_dir / "model.safetensors").stat().st_mtime_ns != stamp
